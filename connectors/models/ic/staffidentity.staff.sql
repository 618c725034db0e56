-- model: staffidentity.staff
-- inputs: staff.staffidentity
-- The seed's workbooks read the staff table as staffidentity.staff, while its DDL creates
-- staff.staffidentity: the same rows under the name the workbooks use, so they run unchanged.
CREATE TABLE staffidentity.staff (
    staffnumber varchar(20) NOT NULL,
    firstname varchar(50),
    lastname varchar(50),
    lastupdated timestamp NOT NULL,
    fullname varchar(100),
    PRIMARY KEY (staffnumber)
);
SELECT
    s.staffnumber AS staffnumber,
    s.firstname AS firstname,
    s.lastname AS lastname,
    s.lastupdated AS lastupdated,
    s.fullname AS fullname
FROM staff.staffidentity s;

-- model: staff.staffidentity
-- inputs: edfi.staff
-- One row per staff member, as the seed's staff.staffidentity.
CREATE TABLE staff.staffidentity (
    staffnumber varchar(20) NOT NULL,
    firstname varchar(50),
    lastname varchar(50),
    lastupdated timestamp NOT NULL,
    fullname varchar(100),
    PRIMARY KEY (staffnumber)
);
SELECT
    s.staffuniqueid AS staffnumber,
    CAST(SUBSTRING(s.firstname, 1, 50) AS varchar(50)) AS firstname,
    CAST(SUBSTRING(s.lastsurname, 1, 50) AS varchar(50)) AS lastname,
    s.lastmodifieddate AS lastupdated,
    CAST(SUBSTRING(s.lastsurname || ', ' || s.firstname, 1, 100) AS varchar(100)) AS fullname
FROM edfi.staff s;

-- model: studentdemographics.student
-- inputs: edfi.student, edfi.studentschoolassociation, edfi.descriptor,
-- inputs: edfi.studenteducationorganizationassociationrace,
-- inputs: edfi.studenteducationorganizationassociationelectronicmail
-- incremental: studentnumber
-- custom: custom.student (studentnumber varchar(32), stateid varchar(15), charter varchar(10), originalcharter varchar(10))
-- One row per student. raceethnicityprimary: the student's one race (any education
-- organization), "Two or more races" for several, "Unknown" for none; hispanicethnicity: a
-- race code starting with "Hispanic"; gender: birth sex, "Unknown" when missing or "Not
-- Selected"; emailaddress: the primary address, else the first by address, of at most 50
-- characters; classyear: ClassOfSchoolYear of the latest enrollment. stateid, charter and
-- originalcharter: the student's row of the custom dataset studentdemographics.Student, as in
-- the seed (NULL without one); advisory is NULL, as in the seed.
CREATE TABLE studentdemographics.student (
    studentnumber varchar(10) NOT NULL,
    stateid varchar(15),
    firstname varchar(50) NOT NULL,
    middlename varchar(50),
    lastname varchar(50) NOT NULL,
    fullname varchar(100),
    advisory varchar(50),
    raceethnicityprimary varchar(50) NOT NULL,
    hispanicethnicity boolean NOT NULL,
    gender varchar(10) NOT NULL,
    emailaddress varchar(50),
    charter varchar(10),
    originalcharter varchar(10),
    lastupdated timestamp NOT NULL,
    dateofbirth date,
    classyear integer,
    PRIMARY KEY (studentnumber)
);
SELECT
    s.studentuniqueid AS studentnumber,
    CAST(SUBSTRING(cs.stateid, 1, 15) AS varchar(15)) AS stateid,
    CAST(SUBSTRING(s.firstname, 1, 50) AS varchar(50)) AS firstname,
    CAST(SUBSTRING(s.middlename, 1, 50) AS varchar(50)) AS middlename,
    CAST(SUBSTRING(s.lastsurname, 1, 50) AS varchar(50)) AS lastname,
    CAST(SUBSTRING(s.lastsurname || ', ' || s.firstname, 1, 100) AS varchar(100)) AS fullname,
    CAST(NULL AS varchar(50)) AS advisory,
    CAST(CASE
        WHEN r.races IS NULL THEN 'Unknown'
        WHEN r.races > 1 THEN 'Two or more races'
        ELSE SUBSTRING(r.race, 1, 50)
    END AS varchar(50)) AS raceethnicityprimary,
    CASE WHEN r.hispanic = 1 THEN true ELSE false END AS hispanicethnicity,
    CAST(CASE
        WHEN sex.codevalue IS NULL OR sex.codevalue = 'Not Selected' THEN 'Unknown'
        ELSE SUBSTRING(sex.codevalue, 1, 10)
    END AS varchar(10)) AS gender,
    em.address AS emailaddress,
    CAST(SUBSTRING(cs.charter, 1, 10) AS varchar(10)) AS charter,
    CAST(SUBSTRING(cs.originalcharter, 1, 10) AS varchar(10)) AS originalcharter,
    s.lastmodifieddate AS lastupdated,
    s.birthdate AS dateofbirth,
    CAST(en.classofschoolyear AS integer) AS classyear
FROM edfi.student s
LEFT JOIN edfi.descriptor sex ON sex.descriptorid = s.birthsexdescriptorid
LEFT JOIN (
    SELECT CAST(c.studentnumber AS varchar(32)) AS studentnumber,
           MIN(CAST(c.stateid AS varchar(256))) AS stateid,
           MIN(CAST(c.charter AS varchar(256))) AS charter,
           MIN(CAST(c.originalcharter AS varchar(256))) AS originalcharter
    FROM custom.student c
    GROUP BY CAST(c.studentnumber AS varchar(32))
) cs ON cs.studentnumber = s.studentuniqueid
LEFT JOIN (
    SELECT x.studentusi, COUNT(*) AS races, MIN(x.codevalue) AS race,
           MAX(CASE WHEN x.codevalue LIKE 'Hispanic%' THEN 1 ELSE 0 END) AS hispanic
    FROM (
        SELECT DISTINCT ra.studentusi, d.codevalue
        FROM edfi.studenteducationorganizationassociationrace ra
        JOIN edfi.descriptor d ON d.descriptorid = ra.racedescriptorid
    ) x
    GROUP BY x.studentusi
) r ON r.studentusi = s.studentusi
LEFT JOIN (
    SELECT e.studentusi, e.electronicmailaddress AS address,
           ROW_NUMBER() OVER (
               PARTITION BY e.studentusi
               ORDER BY CASE WHEN e.primaryemailaddressindicator THEN 0 ELSE 1 END, e.electronicmailaddress
           ) AS n
    FROM edfi.studenteducationorganizationassociationelectronicmail e
    WHERE LENGTH(e.electronicmailaddress) <= 50
) em ON em.studentusi = s.studentusi AND em.n = 1
LEFT JOIN (
    SELECT a.studentusi, a.classofschoolyear,
           ROW_NUMBER() OVER (PARTITION BY a.studentusi ORDER BY a.entrydate DESC, a.schoolid) AS n
    FROM edfi.studentschoolassociation a
) en ON en.studentusi = s.studentusi AND en.n = 1;

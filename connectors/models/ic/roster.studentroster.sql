-- model: roster.studentroster
-- inputs: edfi.studentsectionassociation, edfi.section, edfi.course, edfi.student
-- incremental: studentnumber
-- One row per student section association whose section has a course. sectionid and courseid
-- as in roster.section and roster.course. The public definition has no key; this one keys the
-- table by section, student and start date (each NOT NULL), which the ODS key implies.
CREATE TABLE roster.studentroster (
    sectionid bigint NOT NULL,
    courseid bigint,
    studentnumber varchar(10) NOT NULL,
    rosterstartdate date NOT NULL,
    rosterenddate date,
    endyear integer,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (sectionid, studentnumber, rosterstartdate)
);
WITH crs AS (
    SELECT c.coursecode, c.educationorganizationid,
           CASE WHEN c.coursecode ~ '^[0-9]{1,18}$' THEN CAST(c.coursecode AS bigint)
                ELSE -CAST(ROW_NUMBER() OVER (ORDER BY c.educationorganizationid, c.coursecode) AS bigint)
           END AS courseid
    FROM edfi.course c
),
sec AS (
    SELECT s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode, s.sectionidentifier,
           CASE WHEN s.sectionidentifier ~ '^[0-9]{1,18}$' THEN CAST(s.sectionidentifier AS bigint)
                ELSE -CAST(ROW_NUMBER() OVER (
                    ORDER BY s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode, s.sectionidentifier
                ) AS bigint)
           END AS sectionid
    FROM edfi.section s
)
SELECT
    sec.sectionid AS sectionid,
    crs.courseid AS courseid,
    st.studentuniqueid AS studentnumber,
    a.begindate AS rosterstartdate,
    a.enddate AS rosterenddate,
    CAST(a.schoolyear AS integer) AS endyear,
    a.lastmodifieddate AS lastupdated
FROM edfi.studentsectionassociation a
JOIN sec ON sec.schoolid = a.schoolid AND sec.schoolyear = a.schoolyear AND sec.sessionname = a.sessionname
    AND sec.localcoursecode = a.localcoursecode AND sec.sectionidentifier = a.sectionidentifier
JOIN crs ON crs.coursecode = sec.localcoursecode AND crs.educationorganizationid = sec.schoolid
JOIN edfi.student st ON st.studentusi = a.studentusi;

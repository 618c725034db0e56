-- model: roster.studentroster
-- inputs: edfi.studentsectionassociation, edfi.section, roster.section, edfi.student
-- incremental: studentnumber
-- history: endyear
-- students_of: edfi.section: SELECT a.studentusi FROM edfi.studentsectionassociation a JOIN {changed} c ON c.schoolid = a.schoolid AND c.schoolyear = a.schoolyear
-- One row per student section association whose section has a course: sectionid as in
-- roster.section, courseid the section's there (see roster.section for how it is found). The public definition has no key; this one keys the
-- table by section, student and start date (each NOT NULL), which the ODS key implies.
-- A changed Section refreshes the students of its school and year: a section added or deleted
-- renumbers the school's sections of that year, no other's.
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
WITH sec AS (
    SELECT s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode, s.sectionidentifier,
           CASE WHEN s.sectionidentifier ~ '^[0-9]{1,18}$' THEN CAST(s.sectionidentifier AS bigint)
                ELSE -(CAST(s.schoolyear AS bigint) * 1000000000000000 + CAST(s.schoolid AS bigint) * 100000
                       + ROW_NUMBER() OVER (
                    PARTITION BY s.schoolyear, s.schoolid
                    ORDER BY s.sessionname, s.localcoursecode, s.sectionidentifier
                ))
           END AS sectionid
    FROM edfi.section s
)
SELECT
    sec.sectionid AS sectionid,
    rs.courseid AS courseid,
    st.studentuniqueid AS studentnumber,
    a.begindate AS rosterstartdate,
    a.enddate AS rosterenddate,
    CAST(a.schoolyear AS integer) AS endyear,
    a.lastmodifieddate AS lastupdated
FROM edfi.studentsectionassociation a
JOIN sec ON sec.schoolid = a.schoolid AND sec.schoolyear = a.schoolyear AND sec.sessionname = a.sessionname
    AND sec.localcoursecode = a.localcoursecode AND sec.sectionidentifier = a.sectionidentifier
JOIN roster.section rs ON rs.sectionid = sec.sectionid
JOIN edfi.student st ON st.studentusi = a.studentusi;

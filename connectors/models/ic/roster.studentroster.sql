-- model: roster.studentroster
-- inputs: edfi.studentsectionassociation, ids.section, edfi.student
-- incremental: studentnumber
-- history: endyear
-- students_of: ids.section: SELECT a.studentusi FROM edfi.studentsectionassociation a JOIN {changed} c ON c.schoolid = a.schoolid AND c.schoolyear = a.schoolyear AND c.sessionname = a.sessionname AND c.localcoursecode = a.localcoursecode AND c.sectionidentifier = a.sectionidentifier
-- One row per student section association whose section has a course: sectionid and courseid
-- as ids.section (and so roster.section) finds and numbers them. The public definition has no
-- key; this one keys the table by section, student and start date (each NOT NULL), which the
-- ODS key implies.
-- A change of ids.section (a Section, Course or course identification code changed) refreshes
-- the students of the sections whose row there changed: a section added or deleted renumbers
-- its school's sections of that year, no other's.
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
SELECT
    k.sectionid AS sectionid,
    k.courseid AS courseid,
    st.studentuniqueid AS studentnumber,
    a.begindate AS rosterstartdate,
    a.enddate AS rosterenddate,
    CAST(a.schoolyear AS integer) AS endyear,
    a.lastmodifieddate AS lastupdated
FROM edfi.studentsectionassociation a
JOIN ids.section k ON k.schoolid = a.schoolid AND k.schoolyear = a.schoolyear AND k.sessionname = a.sessionname
    AND k.localcoursecode = a.localcoursecode AND k.sectionidentifier = a.sectionidentifier
JOIN edfi.student st ON st.studentusi = a.studentusi;

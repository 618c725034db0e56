-- model: roster.teacherstudentlinks
-- inputs: edfi.studentsectionassociation, edfi.staffsectionassociation, ids.section,
-- inputs: edfi.student, edfi.staff
-- incremental: studentnumber
-- history: endyear
-- students_of: ids.section: SELECT a.studentusi FROM edfi.studentsectionassociation a JOIN {changed} c ON c.schoolid = a.schoolid AND c.schoolyear = a.schoolyear AND c.sessionname = a.sessionname AND c.localcoursecode = a.localcoursecode AND c.sectionidentifier = a.sectionidentifier
-- students_of: edfi.staffsectionassociation: SELECT a.studentusi FROM edfi.studentsectionassociation a JOIN {changed} c ON c.schoolid = a.schoolid AND c.schoolyear = a.schoolyear AND c.sessionname = a.sessionname AND c.localcoursecode = a.localcoursecode AND c.sectionidentifier = a.sectionidentifier
-- students_of: edfi.staff: SELECT a.studentusi FROM edfi.studentsectionassociation a WHERE EXISTS (SELECT 1 FROM edfi.staffsectionassociation t JOIN {changed} c ON c.staffusi = t.staffusi WHERE t.schoolid = a.schoolid AND t.schoolyear = a.schoolyear AND t.sessionname = a.sessionname AND t.localcoursecode = a.localcoursecode AND t.sectionidentifier = a.sectionidentifier AND (c.edfi_cdc_op = 'd' OR NOT EXISTS (SELECT 1 FROM roster.teacherstudentlinks l WHERE l.staffnumber = c.staffuniqueid)))
-- index: staffnumber
-- One row per student and staff member of the same section (whose course is found). sectionid
-- and courseid as in roster.section (ids.section); lastupdated: the later of the two
-- associations' LastModifiedDate. The public definition has no key; this one keys the table
-- by section, student, start date and staff member (each NOT NULL). A change of ids.section
-- refreshes the students of the sections whose row there changed, as in roster.studentroster.
CREATE TABLE roster.teacherstudentlinks (
    sectionid bigint NOT NULL,
    courseid bigint,
    studentnumber varchar(10) NOT NULL,
    rosterstartdate date NOT NULL,
    rosterenddate date,
    staffnumber varchar(15) NOT NULL,
    staffstartdate date,
    staffenddate date,
    endyear integer,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (sectionid, studentnumber, rosterstartdate, staffnumber)
);
SELECT
    k.sectionid AS sectionid,
    k.courseid AS courseid,
    st.studentuniqueid AS studentnumber,
    a.begindate AS rosterstartdate,
    a.enddate AS rosterenddate,
    sf.staffuniqueid AS staffnumber,
    t.begindate AS staffstartdate,
    t.enddate AS staffenddate,
    CAST(a.schoolyear AS integer) AS endyear,
    GREATEST(a.lastmodifieddate, t.lastmodifieddate) AS lastupdated
FROM edfi.studentsectionassociation a
JOIN edfi.staffsectionassociation t ON t.schoolid = a.schoolid AND t.schoolyear = a.schoolyear
    AND t.sessionname = a.sessionname AND t.localcoursecode = a.localcoursecode
    AND t.sectionidentifier = a.sectionidentifier
JOIN ids.section k ON k.schoolid = a.schoolid AND k.schoolyear = a.schoolyear AND k.sessionname = a.sessionname
    AND k.localcoursecode = a.localcoursecode AND k.sectionidentifier = a.sectionidentifier
JOIN edfi.student st ON st.studentusi = a.studentusi
JOIN edfi.staff sf ON sf.staffusi = t.staffusi;

-- model: ids.section
-- inputs: edfi.section, edfi.course, edfi.courseidentificationcode
-- refresh_by: schoolid = schoolid: edfi.section
-- The number each section has in the roster models, kept with the section's key so that
-- roster.section, roster.studentroster and roster.teacherstudentlinks join it by key rather than
-- each numbering every section of the district again in each refresh; a changed Section
-- renumbers its school's rows here alone. Not a report: no workbook reads schema ids.
-- One row per section whose course is found. A section's course is the course at the
-- section's school with an identification code equal to the section's LocalCourseCode (the
-- seed's rule: a SIS puts its course number there), else the one whose CourseCode equals it
-- (the Ed-Fi convention); among several, the lowest courseid. sectionid: the section
-- identifier when it is a number (the SIS's section id), else minus (year × 10^15 + school id
-- × 10^5 + its rank among the school's sections of the year by (session, LocalCourseCode,
-- identifier)), so that a section added or deleted renumbers only its school's sections of
-- that year, and deleting a year renumbers no other year's; courseid as in roster.course;
-- sectionnumber: the section's place among the sections of its LocalCourseCode in its
-- session, by identifier.
CREATE TABLE ids.section (
    schoolid integer NOT NULL,
    schoolyear smallint NOT NULL,
    sessionname varchar(180) NOT NULL,
    localcoursecode varchar(180) NOT NULL,
    sectionidentifier varchar(765) NOT NULL,
    sectionid bigint NOT NULL,
    courseid bigint NOT NULL,
    sectionnumber integer NOT NULL,
    sectionname varchar(300),
    lastmodifieddate timestamp NOT NULL,
    PRIMARY KEY (schoolid, schoolyear, sessionname, localcoursecode, sectionidentifier)
);
WITH crs AS (
    SELECT c.coursecode, c.educationorganizationid,
           CASE WHEN c.coursecode ~ '^[0-9]{1,18}$' THEN CAST(c.coursecode AS bigint)
                ELSE -CAST(ROW_NUMBER() OVER (ORDER BY c.educationorganizationid, c.coursecode) AS bigint)
           END AS courseid
    FROM edfi.course c
),
named AS (
    SELECT i.identificationcode AS localcoursecode, i.educationorganizationid, i.coursecode, 1 AS rule
    FROM edfi.courseidentificationcode i
    UNION ALL
    SELECT c.coursecode, c.educationorganizationid, c.coursecode, 2
    FROM edfi.course c
),
sec AS (
    SELECT s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode, s.sectionidentifier,
           s.lastmodifieddate, s.sectionname,
           CASE WHEN s.sectionidentifier ~ '^[0-9]{1,18}$' THEN CAST(s.sectionidentifier AS bigint)
                ELSE -(CAST(s.schoolyear AS bigint) * 1000000000000000 + CAST(s.schoolid AS bigint) * 100000
                       + ROW_NUMBER() OVER (
                    PARTITION BY s.schoolyear, s.schoolid
                    ORDER BY s.sessionname, s.localcoursecode, s.sectionidentifier
                ))
           END AS sectionid,
           ROW_NUMBER() OVER (
               PARTITION BY s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode
               ORDER BY s.sectionidentifier
           ) AS sectionnumber
    FROM edfi.section s
),
found AS (
    SELECT sec.sectionid, crs.courseid,
           ROW_NUMBER() OVER (PARTITION BY sec.sectionid ORDER BY n.rule, crs.courseid) AS pick
    FROM sec
    JOIN named n ON n.localcoursecode = sec.localcoursecode AND n.educationorganizationid = sec.schoolid
    JOIN crs ON crs.coursecode = n.coursecode AND crs.educationorganizationid = n.educationorganizationid
)
SELECT
    sec.schoolid AS schoolid,
    sec.schoolyear AS schoolyear,
    sec.sessionname AS sessionname,
    sec.localcoursecode AS localcoursecode,
    sec.sectionidentifier AS sectionidentifier,
    sec.sectionid AS sectionid,
    f.courseid AS courseid,
    CAST(sec.sectionnumber AS integer) AS sectionnumber,
    sec.sectionname AS sectionname,
    sec.lastmodifieddate AS lastmodifieddate
FROM sec
JOIN found f ON f.sectionid = sec.sectionid AND f.pick = 1;

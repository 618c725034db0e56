-- model: roster.section
-- inputs: edfi.section, edfi.course, edfi.courseidentificationcode, edfi.session
-- history: endyear
-- One row per section whose course is found. A section's course is the course at the section's
-- school with an identification code equal to the section's LocalCourseCode (the seed's rule:
-- a SIS puts its course number there), else the one whose CourseCode equals it (the Ed-Fi
-- convention); among several, the lowest courseid. sectionid: the section identifier when it
-- is a number (the SIS's section id), else minus (year × 10^15 + school id × 10^5 + its rank
-- among the school's sections of the year by (session, LocalCourseCode, identifier)), so that
-- a section added or deleted renumbers only its school's sections of that year, and deleting
-- a year renumbers no other year's; courseid as in roster.course; sectionnumber: the
-- section's place among the sections of its LocalCourseCode in its session, by identifier;
-- start and end: its session's dates; sectionname: the section's SectionName (not in the
-- seed's definition, but both seed workbooks read it).
CREATE TABLE roster.section (
    sectionid bigint NOT NULL,
    courseid bigint NOT NULL,
    sectionnumber integer NOT NULL,
    sectionstartdate date,
    sectionenddate date,
    endyear integer,
    lastupdated timestamp NOT NULL,
    sectionname varchar(100),
    PRIMARY KEY (sectionid)
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
    sec.sectionid AS sectionid,
    f.courseid AS courseid,
    CAST(sec.sectionnumber AS integer) AS sectionnumber,
    se.begindate AS sectionstartdate,
    se.enddate AS sectionenddate,
    CAST(sec.schoolyear AS integer) AS endyear,
    sec.lastmodifieddate AS lastupdated,
    CAST(sec.sectionname AS varchar(100)) AS sectionname
FROM sec
JOIN found f ON f.sectionid = sec.sectionid AND f.pick = 1
LEFT JOIN edfi.session se ON se.schoolid = sec.schoolid AND se.schoolyear = sec.schoolyear
    AND se.sessionname = sec.sessionname;

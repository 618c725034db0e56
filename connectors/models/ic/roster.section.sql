-- model: roster.section
-- inputs: edfi.section, edfi.course, edfi.session
-- One row per section whose course exists (LocalCourseCode = CourseCode at the section's
-- school). sectionid: the section identifier when it is a number (the SIS's section id), else
-- minus its rank among all sections by (school, year, session, course code, identifier);
-- courseid as in roster.course; sectionnumber: the section's place among the sections of its
-- course in its session, by identifier; start and end: its session's dates.
CREATE TABLE roster.section (
    sectionid bigint NOT NULL,
    courseid bigint NOT NULL,
    sectionnumber integer NOT NULL,
    sectionstartdate date,
    sectionenddate date,
    endyear integer,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (sectionid)
);
WITH crs AS (
    SELECT c.coursecode, c.educationorganizationid,
           CASE WHEN c.coursecode ~ '^[0-9]{1,18}$' THEN CAST(c.coursecode AS bigint)
                ELSE -CAST(ROW_NUMBER() OVER (ORDER BY c.educationorganizationid, c.coursecode) AS bigint)
           END AS courseid
    FROM edfi.course c
),
sec AS (
    SELECT s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode, s.lastmodifieddate,
           CASE WHEN s.sectionidentifier ~ '^[0-9]{1,18}$' THEN CAST(s.sectionidentifier AS bigint)
                ELSE -CAST(ROW_NUMBER() OVER (
                    ORDER BY s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode, s.sectionidentifier
                ) AS bigint)
           END AS sectionid,
           ROW_NUMBER() OVER (
               PARTITION BY s.schoolid, s.schoolyear, s.sessionname, s.localcoursecode
               ORDER BY s.sectionidentifier
           ) AS sectionnumber
    FROM edfi.section s
)
SELECT
    sec.sectionid AS sectionid,
    crs.courseid AS courseid,
    CAST(sec.sectionnumber AS integer) AS sectionnumber,
    se.begindate AS sectionstartdate,
    se.enddate AS sectionenddate,
    CAST(sec.schoolyear AS integer) AS endyear,
    sec.lastmodifieddate AS lastupdated
FROM sec
JOIN crs ON crs.coursecode = sec.localcoursecode AND crs.educationorganizationid = sec.schoolid
LEFT JOIN edfi.session se ON se.schoolid = sec.schoolid AND se.schoolyear = sec.schoolyear
    AND se.sessionname = sec.sessionname;

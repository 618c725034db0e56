-- model: roster.course
-- inputs: edfi.course, edfi.courseidentificationcode, roster.section, edfi.calendar,
-- inputs: edfi.schoolyeartype, edfi.descriptor
-- history: endyear
-- One row per course (CourseCode, EducationOrganizationId). courseid: the course code when it
-- is a number (the SIS's course id), else minus its rank among all courses by (education
-- organization, code); coursenumber: the "LEA course code" identification code, else the course
-- code; department: the academic subject. endyear: the latest school year with a section of the
-- course (as roster.section finds sections' courses); calendarnumber: the school's calendar of
-- that year (lowest code); active: that year is the current school year.
CREATE TABLE roster.course (
    courseid bigint NOT NULL,
    coursenumber varchar(15),
    calendarnumber integer,
    coursename varchar(50),
    department varchar(50),
    active boolean,
    endyear integer,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (courseid)
);
WITH cal AS (
    SELECT c.calendarcode, c.schoolid, c.schoolyear,
           CASE WHEN c.calendarcode ~ '^[0-9]{1,9}$' THEN CAST(c.calendarcode AS integer)
                ELSE -CAST(c.schoolyear * 10000 + ROW_NUMBER() OVER (PARTITION BY c.schoolyear ORDER BY c.schoolid, c.calendarcode) AS integer)
           END AS calendarnumber,
           ROW_NUMBER() OVER (PARTITION BY c.schoolid, c.schoolyear ORDER BY c.calendarcode) AS n
    FROM edfi.calendar c
),
crs AS (
    SELECT c.coursecode, c.educationorganizationid, c.coursetitle, c.academicsubjectdescriptorid,
           c.lastmodifieddate,
           CASE WHEN c.coursecode ~ '^[0-9]{1,18}$' THEN CAST(c.coursecode AS bigint)
                ELSE -CAST(ROW_NUMBER() OVER (ORDER BY c.educationorganizationid, c.coursecode) AS bigint)
           END AS courseid
    FROM edfi.course c
),
lea AS (
    SELECT i.coursecode, i.educationorganizationid, MIN(i.identificationcode) AS code
    FROM edfi.courseidentificationcode i
    JOIN edfi.descriptor d ON d.descriptorid = i.courseidentificationsystemdescriptorid
    WHERE d.codevalue = 'LEA course code'
    GROUP BY i.coursecode, i.educationorganizationid
),
offered AS (
    SELECT courseid, MAX(endyear) AS lastyear
    FROM roster.section
    GROUP BY courseid
)
SELECT
    crs.courseid AS courseid,
    COALESCE(lea.code, crs.coursecode) AS coursenumber,
    cal.calendarnumber AS calendarnumber,
    CAST(SUBSTRING(crs.coursetitle, 1, 50) AS varchar(50)) AS coursename,
    CAST(SUBSTRING(subject.codevalue, 1, 50) AS varchar(50)) AS department,
    CASE WHEN o.lastyear = cur.schoolyear THEN true ELSE false END AS active,
    CAST(o.lastyear AS integer) AS endyear,
    crs.lastmodifieddate AS lastupdated
FROM crs
CROSS JOIN (SELECT MAX(schoolyear) AS schoolyear FROM edfi.schoolyeartype WHERE currentschoolyear) cur
LEFT JOIN lea ON lea.coursecode = crs.coursecode AND lea.educationorganizationid = crs.educationorganizationid
LEFT JOIN edfi.descriptor subject ON subject.descriptorid = crs.academicsubjectdescriptorid
LEFT JOIN offered o ON o.courseid = crs.courseid
LEFT JOIN cal ON cal.schoolid = crs.educationorganizationid AND cal.schoolyear = o.lastyear AND cal.n = 1;

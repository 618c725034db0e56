-- model: enrollment.studentenrollment
-- inputs: edfi.studentschoolassociation, edfi.student, edfi.calendar,
-- inputs: schedule.calendaraggregate, edfi.schoolyeartype, edfi.descriptor
-- incremental: studentnumber
-- history: endyear
-- students_of: edfi.calendardate: SELECT a.studentusi FROM edfi.studentschoolassociation a JOIN (SELECT DISTINCT c.schoolid, c.schoolyear, c.calendarcode FROM {changed} c WHERE NOT EXISTS (SELECT 1 FROM edfi.calendardate l WHERE l.calendarcode = c.calendarcode AND l.schoolid = c.schoolid AND l.schoolyear = c.schoolyear AND l.date > c.date)) c ON c.schoolid = a.schoolid AND c.schoolyear = a.schoolyear AND (a.calendarcode IS NULL OR a.calendarcode = c.calendarcode)
-- students_of: edfi.calendardatecalendarevent: SELECT a.studentusi FROM edfi.studentschoolassociation a JOIN (SELECT DISTINCT c.schoolid, c.schoolyear, c.calendarcode FROM {changed} c WHERE NOT EXISTS (SELECT 1 FROM edfi.calendardatecalendarevent l JOIN edfi.descriptor d ON d.descriptorid = l.calendareventdescriptorid WHERE l.calendarcode = c.calendarcode AND l.schoolid = c.schoolid AND l.schoolyear = c.schoolyear AND l.date > c.date AND d.codevalue = 'Instructional day')) c ON c.schoolid = a.schoolid AND c.schoolyear = a.schoolyear AND (a.calendarcode IS NULL OR a.calendarcode = c.calendarcode)
-- One row per student and entry date (of two enrollments starting the same day, the primary
-- school's, else the lowest school id). The calendar is the enrollment's CalendarCode, else the
-- school's calendar of the enrollment's SchoolYear (lowest code); enrollments without SchoolYear
-- or without a calendar with dates are left out. gradelevel: KG, 01-12, PK or UG;
-- numericgradelevel: kindergarten 0 ... twelfth 12, else -1. enrollmentexitdate: the withdraw
-- date, else the calendar's last instructional day (else its last day). activeenrollment: no
-- withdraw date in the current school year; mostrecentenrollmentyear: the student's latest
-- entry date of that school year; completedschoolyear: no withdraw date, or one on or after the
-- calendar's last instructional day. The calendar's last day and last instructional day are
-- read from schedule.calendaraggregate (refreshed by school when calendar dates change), not
-- aggregated from every calendar date of the district in each refresh.
CREATE TABLE enrollment.studentenrollment (
    studentnumber varchar(15) NOT NULL,
    schoolnumber integer NOT NULL,
    calendarnumber integer NOT NULL,
    gradelevel varchar(4) NOT NULL,
    numericgradelevel integer NOT NULL,
    enrollmentstartdate date NOT NULL,
    enrollmentenddate date,
    enrollmentexitdate date NOT NULL,
    withdrawalcode varchar(50),
    withdrawaldescription varchar(50),
    retained boolean NOT NULL,
    endyear smallint NOT NULL,
    schoolyear varchar(20) NOT NULL,
    activeenrollment boolean NOT NULL,
    mostrecentenrollmentyear boolean NOT NULL,
    entrycode varchar(50),
    entrydescription varchar(50),
    lastupdated timestamp,
    completedschoolyear boolean,
    PRIMARY KEY (studentnumber, enrollmentstartdate)
);
WITH cal AS (
    SELECT c.calendarcode, c.schoolid, c.schoolyear,
           CASE WHEN c.calendarcode ~ '^[0-9]{1,9}$' THEN CAST(c.calendarcode AS integer)
                ELSE -CAST(c.schoolyear * 10000 + ROW_NUMBER() OVER (PARTITION BY c.schoolyear ORDER BY c.schoolid, c.calendarcode) AS integer)
           END AS calendarnumber
    FROM edfi.calendar c
),
enr AS (
    SELECT a.studentusi, a.schoolid, a.entrydate, a.schoolyear, a.calendarcode,
           a.entrygradeleveldescriptorid, a.entrytypedescriptorid, a.exitwithdrawdate,
           a.exitwithdrawtypedescriptorid, a.repeatgradeindicator, a.lastmodifieddate,
           ROW_NUMBER() OVER (
               PARTITION BY a.studentusi, a.entrydate
               ORDER BY CASE WHEN a.primaryschool THEN 0 ELSE 1 END, a.schoolid
           ) AS n
    FROM edfi.studentschoolassociation a
    WHERE a.schoolyear IS NOT NULL
),
enrcal AS (
    SELECT e.studentusi, e.schoolid, e.entrydate, e.schoolyear, e.entrygradeleveldescriptorid,
           e.entrytypedescriptorid, e.exitwithdrawdate, e.exitwithdrawtypedescriptorid,
           e.repeatgradeindicator, e.lastmodifieddate, cal.calendarnumber,
           COALESCE(ca.lastinstructionaldate, ca.calendarenddate) AS lastday,
           ROW_NUMBER() OVER (PARTITION BY e.studentusi, e.entrydate ORDER BY cal.calendarcode) AS n
    FROM enr e
    JOIN cal ON cal.schoolid = e.schoolid AND cal.schoolyear = e.schoolyear
        AND (e.calendarcode IS NULL OR cal.calendarcode = e.calendarcode)
    JOIN schedule.calendaraggregate ca ON ca.calendarnumber = cal.calendarnumber
    WHERE e.n = 1
),
graded AS (
    SELECT x.*,
           CASE SPLIT_PART(LOWER(g.codevalue), ' ', 1)
               WHEN 'kindergarten' THEN 0 WHEN 'first' THEN 1 WHEN 'second' THEN 2
               WHEN 'third' THEN 3 WHEN 'fourth' THEN 4 WHEN 'fifth' THEN 5
               WHEN 'sixth' THEN 6 WHEN 'seventh' THEN 7 WHEN 'eighth' THEN 8
               WHEN 'ninth' THEN 9 WHEN 'tenth' THEN 10 WHEN 'eleventh' THEN 11
               WHEN 'twelfth' THEN 12 ELSE -1
           END AS grade,
           CASE WHEN LOWER(g.codevalue) LIKE 'pre%' THEN 'PK' ELSE 'UG' END AS othergrade
    FROM enrcal x
    JOIN edfi.descriptor g ON g.descriptorid = x.entrygradeleveldescriptorid
    WHERE x.n = 1
)
SELECT
    s.studentuniqueid AS studentnumber,
    x.schoolid AS schoolnumber,
    x.calendarnumber AS calendarnumber,
    CAST(CASE
        WHEN x.grade = 0 THEN 'KG'
        WHEN x.grade > 0 THEN LPAD(CAST(x.grade AS varchar(2)), 2, '0')
        ELSE x.othergrade
    END AS varchar(4)) AS gradelevel,
    CAST(x.grade AS integer) AS numericgradelevel,
    x.entrydate AS enrollmentstartdate,
    x.exitwithdrawdate AS enrollmentenddate,
    COALESCE(x.exitwithdrawdate, x.lastday) AS enrollmentexitdate,
    CAST(SUBSTRING(w.codevalue, 1, 50) AS varchar(50)) AS withdrawalcode,
    CAST(SUBSTRING(w.description, 1, 50) AS varchar(50)) AS withdrawaldescription,
    COALESCE(x.repeatgradeindicator, false) AS retained,
    x.schoolyear AS endyear,
    CAST(COALESCE(y.schoolyeardescription,
                  CAST(x.schoolyear - 1 AS varchar(4)) || '-' || CAST(x.schoolyear AS varchar(4))) AS varchar(20)) AS schoolyear,
    CASE WHEN x.exitwithdrawdate IS NULL AND y.currentschoolyear THEN true ELSE false END AS activeenrollment,
    CASE WHEN x.entrydate = MAX(x.entrydate) OVER (PARTITION BY x.studentusi, x.schoolyear)
         THEN true ELSE false END AS mostrecentenrollmentyear,
    CAST(SUBSTRING(en.codevalue, 1, 50) AS varchar(50)) AS entrycode,
    CAST(SUBSTRING(en.description, 1, 50) AS varchar(50)) AS entrydescription,
    x.lastmodifieddate AS lastupdated,
    CASE WHEN x.exitwithdrawdate IS NULL OR x.exitwithdrawdate >= x.lastday THEN true ELSE false END AS completedschoolyear
FROM graded x
JOIN edfi.student s ON s.studentusi = x.studentusi
LEFT JOIN edfi.schoolyeartype y ON y.schoolyear = x.schoolyear
LEFT JOIN edfi.descriptor w ON w.descriptorid = x.exitwithdrawtypedescriptorid
LEFT JOIN edfi.descriptor en ON en.descriptorid = x.entrytypedescriptorid;

-- model: schedule.calendar
-- inputs: edfi.calendar, edfi.calendardate, edfi.calendardatecalendarevent, edfi.descriptor
-- One row per calendar date. calendarnumber: the calendar code when it is a number (the SIS's
-- calendar id), else minus its rank among all calendars by (schoolid, schoolyear, code);
-- attendance: the date has an "Instructional day" event. See docs/models.md.
CREATE TABLE schedule.calendar (
    calendarnumber integer NOT NULL,
    calendarname varchar(50) NOT NULL,
    calendarstartdate date NOT NULL,
    calendarenddate date NOT NULL,
    date date NOT NULL,
    attendance boolean NOT NULL,
    endyear smallint NOT NULL,
    schoolyear varchar(10) NOT NULL,
    lastupdated timestamp NOT NULL,
    schoolnumber integer,
    PRIMARY KEY (calendarnumber, date)
);
SELECT
    cal.calendarnumber AS calendarnumber,
    CAST(SUBSTRING(cal.calendarcode, 1, 50) AS varchar(50)) AS calendarname,
    span.firstdate AS calendarstartdate,
    span.lastdate AS calendarenddate,
    cd.date AS date,
    CASE WHEN ev.instructional = 1 THEN true ELSE false END AS attendance,
    cal.schoolyear AS endyear,
    CAST(CAST(cal.schoolyear - 1 AS varchar(4)) || '-' || CAST(cal.schoolyear AS varchar(4)) AS varchar(10)) AS schoolyear,
    cd.lastmodifieddate AS lastupdated,
    cal.schoolid AS schoolnumber
FROM edfi.calendardate cd
JOIN (
    SELECT c.calendarcode, c.schoolid, c.schoolyear,
           CASE WHEN c.calendarcode ~ '^[0-9]{1,9}$' THEN CAST(c.calendarcode AS integer)
                ELSE -CAST(ROW_NUMBER() OVER (ORDER BY c.schoolid, c.schoolyear, c.calendarcode) AS integer)
           END AS calendarnumber
    FROM edfi.calendar c
) cal ON cal.calendarcode = cd.calendarcode AND cal.schoolid = cd.schoolid AND cal.schoolyear = cd.schoolyear
JOIN (
    SELECT calendarcode, schoolid, schoolyear, MIN(date) AS firstdate, MAX(date) AS lastdate
    FROM edfi.calendardate
    GROUP BY calendarcode, schoolid, schoolyear
) span ON span.calendarcode = cd.calendarcode AND span.schoolid = cd.schoolid AND span.schoolyear = cd.schoolyear
LEFT JOIN (
    SELECT e.calendarcode, e.schoolid, e.schoolyear, e.date,
           MAX(CASE WHEN d.codevalue = 'Instructional day' THEN 1 ELSE 0 END) AS instructional
    FROM edfi.calendardatecalendarevent e
    JOIN edfi.descriptor d ON d.descriptorid = e.calendareventdescriptorid
    GROUP BY e.calendarcode, e.schoolid, e.schoolyear, e.date
) ev ON ev.calendarcode = cd.calendarcode AND ev.schoolid = cd.schoolid
    AND ev.schoolyear = cd.schoolyear AND ev.date = cd.date;

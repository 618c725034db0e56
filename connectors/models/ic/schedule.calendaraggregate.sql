-- model: schedule.calendaraggregate
-- inputs: edfi.calendar, edfi.calendardate, edfi.calendardatecalendarevent, edfi.descriptor
-- history: endyear
-- refresh_by: schoolnumber = schoolid: edfi.calendardate, edfi.calendardatecalendarevent
-- One row per calendar with dates. attendancesy: instructional days in the calendar;
-- attendancesytd: those before CURRENT_DATE on the day of the refresh. calendarnumber as in
-- schedule.calendar. lastinstructionaldate (not in the seed's definition): the calendar's last
-- instructional day, NULL without one; enrollment.studentenrollment reads it here rather than
-- aggregating every calendar date of the district in each of its refreshes.
CREATE TABLE schedule.calendaraggregate (
    calendarnumber integer NOT NULL,
    attendancesytd integer NOT NULL,
    attendancesy integer NOT NULL,
    calendarstartdate date NOT NULL,
    calendarenddate date NOT NULL,
    endyear smallint NOT NULL,
    lastupdated timestamp NOT NULL,
    schoolnumber integer,
    lastinstructionaldate date,
    PRIMARY KEY (calendarnumber)
);
SELECT
    cal.calendarnumber AS calendarnumber,
    CAST(COALESCE(ev.sytd, 0) AS integer) AS attendancesytd,
    CAST(COALESCE(ev.sy, 0) AS integer) AS attendancesy,
    span.firstdate AS calendarstartdate,
    span.lastdate AS calendarenddate,
    cal.schoolyear AS endyear,
    span.lastupdated AS lastupdated,
    cal.schoolid AS schoolnumber,
    ev.lastinstructional AS lastinstructionaldate
FROM (
    SELECT c.calendarcode, c.schoolid, c.schoolyear,
           CASE WHEN c.calendarcode ~ '^[0-9]{1,9}$' THEN CAST(c.calendarcode AS integer)
                ELSE -CAST(c.schoolyear * 10000 + ROW_NUMBER() OVER (PARTITION BY c.schoolyear ORDER BY c.schoolid, c.calendarcode) AS integer)
           END AS calendarnumber
    FROM edfi.calendar c
) cal
JOIN (
    SELECT calendarcode, schoolid, schoolyear, MIN(date) AS firstdate, MAX(date) AS lastdate,
           MAX(lastmodifieddate) AS lastupdated
    FROM edfi.calendardate
    GROUP BY calendarcode, schoolid, schoolyear
) span ON span.calendarcode = cal.calendarcode AND span.schoolid = cal.schoolid AND span.schoolyear = cal.schoolyear
LEFT JOIN (
    SELECT calendarcode, schoolid, schoolyear,
           SUM(CASE WHEN instructional = 1 AND date < CURRENT_DATE THEN 1 ELSE 0 END) AS sytd,
           SUM(instructional) AS sy,
           MAX(CASE WHEN instructional = 1 THEN date END) AS lastinstructional
    FROM (
        SELECT e.calendarcode, e.schoolid, e.schoolyear, e.date,
               MAX(CASE WHEN d.codevalue = 'Instructional day' THEN 1 ELSE 0 END) AS instructional
        FROM edfi.calendardatecalendarevent e
        JOIN edfi.descriptor d ON d.descriptorid = e.calendareventdescriptorid
        GROUP BY e.calendarcode, e.schoolid, e.schoolyear, e.date
    ) days
    GROUP BY calendarcode, schoolid, schoolyear
) ev ON ev.calendarcode = cal.calendarcode AND ev.schoolid = cal.schoolid AND ev.schoolyear = cal.schoolyear;

-- model: schedule.calendar
-- inputs: edfi.calendar, edfi.calendardate, edfi.calendardatecalendarevent, edfi.descriptor
-- history: endyear
-- refresh_by: schoolnumber = schoolid: edfi.calendardate, edfi.calendardatecalendarevent
-- One row per calendar date. calendarnumber: the calendar code when it is a number (the SIS's
-- calendar id), else minus (schoolyear × 10,000 + its rank among the year's calendars by
-- (schoolid, code)), so that deleting one year's calendars renumbers no other year's;
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
    x.calendarnumber,
    x.calendarname,
    MIN(x.date) OVER (PARTITION BY x.calendarcode, x.schoolnumber, x.endyear) AS calendarstartdate,
    MAX(x.date) OVER (PARTITION BY x.calendarcode, x.schoolnumber, x.endyear) AS calendarenddate,
    x.date,
    x.attendance,
    x.endyear,
    CAST(CAST(x.endyear - 1 AS varchar(4)) || '-' || CAST(x.endyear AS varchar(4)) AS varchar(10)) AS schoolyear,
    x.lastupdated,
    x.schoolnumber
FROM (
    -- Events are joined row by row and folded per date (not pre-aggregated and joined on four
    -- columns, which PostgreSQL misestimates into a nested loop over the aggregate).
    SELECT
        cal.calendarnumber,
        cal.calendarcode,
        CAST(SUBSTRING(cal.calendarcode, 1, 50) AS varchar(50)) AS calendarname,
        cd.date,
        CASE WHEN MAX(CASE WHEN d.codevalue = 'Instructional day' THEN 1 ELSE 0 END) = 1
             THEN true ELSE false END AS attendance,
        cal.schoolyear AS endyear,
        cd.lastmodifieddate AS lastupdated,
        cal.schoolid AS schoolnumber
    FROM edfi.calendardate cd
    JOIN (
        SELECT c.calendarcode, c.schoolid, c.schoolyear,
               CASE WHEN c.calendarcode ~ '^[0-9]{1,9}$' THEN CAST(c.calendarcode AS integer)
                    ELSE -CAST(c.schoolyear * 10000 + ROW_NUMBER() OVER (PARTITION BY c.schoolyear ORDER BY c.schoolid, c.calendarcode) AS integer)
               END AS calendarnumber
        FROM edfi.calendar c
    ) cal ON cal.calendarcode = cd.calendarcode AND cal.schoolid = cd.schoolid AND cal.schoolyear = cd.schoolyear
    LEFT JOIN edfi.calendardatecalendarevent e
        ON e.calendarcode = cd.calendarcode AND e.schoolid = cd.schoolid
        AND e.schoolyear = cd.schoolyear AND e.date = cd.date
    LEFT JOIN edfi.descriptor d ON d.descriptorid = e.calendareventdescriptorid
    GROUP BY cal.calendarnumber, cal.calendarcode, cd.date, cal.schoolyear, cd.lastmodifieddate, cal.schoolid
) x;

-- model: schedule.schoolyear
-- inputs: edfi.schoolyeartype
-- One row per school year. schoolyearshort: "24-25"; yearsago: current school year minus this
-- one (0 for the current year, negative for later years, NULL when no year is current).
CREATE TABLE schedule.schoolyear (
    schoolyear varchar(10) NOT NULL,
    schoolyearshort varchar(10) NOT NULL,
    endyear smallint NOT NULL,
    active boolean NOT NULL,
    yearsago integer,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (endyear)
);
SELECT
    y.schoolyeardescription AS schoolyear,
    CAST(SUBSTRING(CAST(y.schoolyear - 1 AS varchar(4)), 3, 2) || '-'
         || SUBSTRING(CAST(y.schoolyear AS varchar(4)), 3, 2) AS varchar(10)) AS schoolyearshort,
    y.schoolyear AS endyear,
    y.currentschoolyear AS active,
    CAST(MAX(CASE WHEN y.currentschoolyear THEN y.schoolyear END) OVER () - y.schoolyear AS integer) AS yearsago,
    y.lastmodifieddate AS lastupdated
FROM edfi.schoolyeartype y;

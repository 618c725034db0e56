-- model: schedule.school
-- inputs: edfi.school, edfi.educationorganization, edfi.educationorganizationaddress,
-- inputs: edfi.schoolgradelevel, edfi.descriptor
-- custom: custom.schoolmanualattributes (schoolnumber varchar(20), schoolabbreviation varchar(10), active boolean)
-- One row per school. region: state of the physical address (else of any address);
-- level: ES/MS/HS by the lowest grade the school offers (K-4, 5-8, 9-12). schoolabbreviation
-- and active: the school's row of the custom dataset SchoolManualAttributes, as in the seed;
-- without one, the short name and "not Closed or Inactive". See docs/models.md.
CREATE TABLE schedule.school (
    schoolnumber integer NOT NULL,
    schoolname varchar(50) NOT NULL,
    region varchar(2) NOT NULL,
    level varchar(2),
    schoolabbreviation varchar(10) NOT NULL,
    active boolean NOT NULL,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (schoolnumber)
);
SELECT
    s.schoolid AS schoolnumber,
    CAST(SUBSTRING(eo.nameofinstitution, 1, 50) AS varchar(50)) AS schoolname,
    COALESCE(st.physical, st.anystate, '') AS region,
    CAST(CASE
        WHEN gl.lowest BETWEEN 0 AND 4 THEN 'ES'
        WHEN gl.lowest BETWEEN 5 AND 8 THEN 'MS'
        WHEN gl.lowest BETWEEN 9 AND 12 THEN 'HS'
    END AS varchar(2)) AS level,
    CAST(SUBSTRING(COALESCE(sma.schoolabbreviation, eo.shortnameofinstitution, eo.nameofinstitution), 1, 10) AS varchar(10)) AS schoolabbreviation,
    COALESCE(sma.active, CASE WHEN os.codevalue IN ('Closed', 'Inactive') THEN false ELSE true END) AS active,
    eo.lastmodifieddate AS lastupdated
FROM edfi.school s
JOIN edfi.educationorganization eo ON eo.educationorganizationid = s.schoolid
LEFT JOIN edfi.descriptor os ON os.descriptorid = eo.operationalstatusdescriptorid
LEFT JOIN (
    SELECT CAST(m.schoolnumber AS varchar(20)) AS schoolnumber,
           MIN(CAST(m.schoolabbreviation AS varchar(256))) AS schoolabbreviation,
           BOOL_AND(m.active) AS active
    FROM custom.schoolmanualattributes m
    GROUP BY CAST(m.schoolnumber AS varchar(20))
) sma ON sma.schoolnumber = CAST(s.schoolid AS varchar(20))
LEFT JOIN (
    SELECT a.educationorganizationid,
           MIN(CASE WHEN t.codevalue = 'Physical' THEN sa.codevalue END) AS physical,
           MIN(sa.codevalue) AS anystate
    FROM edfi.educationorganizationaddress a
    JOIN edfi.descriptor sa ON sa.descriptorid = a.stateabbreviationdescriptorid
    LEFT JOIN edfi.descriptor t ON t.descriptorid = a.addresstypedescriptorid
    GROUP BY a.educationorganizationid
) st ON st.educationorganizationid = s.schoolid
LEFT JOIN (
    SELECT sgl.schoolid,
           MIN(CASE SPLIT_PART(LOWER(g.codevalue), ' ', 1)
               WHEN 'kindergarten' THEN 0 WHEN 'first' THEN 1 WHEN 'second' THEN 2
               WHEN 'third' THEN 3 WHEN 'fourth' THEN 4 WHEN 'fifth' THEN 5
               WHEN 'sixth' THEN 6 WHEN 'seventh' THEN 7 WHEN 'eighth' THEN 8
               WHEN 'ninth' THEN 9 WHEN 'tenth' THEN 10 WHEN 'eleventh' THEN 11
               WHEN 'twelfth' THEN 12
           END) AS lowest
    FROM edfi.schoolgradelevel sgl
    JOIN edfi.descriptor g ON g.descriptorid = sgl.gradeleveldescriptorid
    GROUP BY sgl.schoolid
) gl ON gl.schoolid = s.schoolid;

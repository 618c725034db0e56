-- model: roster.section
-- inputs: ids.section, edfi.session
-- history: endyear
-- One row per section whose course is found; sectionid, courseid and sectionnumber as
-- ids.section finds and numbers them; start and end: its session's dates; sectionname: the
-- section's SectionName (not in the seed's definition, but both seed workbooks read it).
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
SELECT
    k.sectionid AS sectionid,
    k.courseid AS courseid,
    k.sectionnumber AS sectionnumber,
    se.begindate AS sectionstartdate,
    se.enddate AS sectionenddate,
    CAST(k.schoolyear AS integer) AS endyear,
    k.lastmodifieddate AS lastupdated,
    CAST(k.sectionname AS varchar(100)) AS sectionname
FROM ids.section k
LEFT JOIN edfi.session se ON se.schoolid = k.schoolid AND se.schoolyear = k.schoolyear
    AND se.sessionname = k.sessionname;

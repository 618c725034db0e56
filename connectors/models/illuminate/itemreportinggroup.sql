-- model: illuminate.itemreportinggroup
-- inputs: edfi.assessmentitem, edfi.descriptor, illuminate.assessment
-- history: testyear
--
-- Each Illuminate item in its reporting group (its item category, see illuminate.reportinggroup).
-- Ed-Fi item codes are unique only within an assessment, so the key includes assessmentid.
CREATE TABLE illuminate.itemreportinggroup (
    questionid varchar(60) NOT NULL,
    reportinggroupid bigint NOT NULL,
    reportinggrouplabel varchar(255),
    testyear integer NOT NULL,
    lastupdated timestamp NOT NULL,
    assessmentid varchar(60) NOT NULL,
    PRIMARY KEY (assessmentid, questionid, reportinggroupid)
);
SELECT
    ai.identificationcode AS questionid,
    CAST(cat.descriptorid AS bigint) AS reportinggroupid,
    TRIM(cat.codevalue) AS reportinggrouplabel,
    ia.testyear,
    ai.lastmodifieddate AS lastupdated,
    ai.assessmentidentifier AS assessmentid
FROM edfi.assessmentitem ai
JOIN illuminate.assessment ia
    ON ia.assessmentid = ai.assessmentidentifier
JOIN edfi.descriptor cat
    ON cat.descriptorid = ai.assessmentitemcategorydescriptorid
WHERE ai.namespace = 'uri://illuminateed.com';

-- model: illuminate.reportinggroup
-- inputs: edfi.assessmentitem, edfi.descriptor, illuminate.assessment
-- history: testyear
--
-- Illuminate's own reporting groups (question groups defined in Illuminate) are not in the ODS;
-- the ODS groups the items of an assessment by item category, so each item category used by an
-- Illuminate item is a reporting group: its id is the category's DescriptorId, its label the
-- code value. testyear is the latest test year of the assessments using it.
CREATE TABLE illuminate.reportinggroup (
    reportinggroupid bigint NOT NULL,
    reportinggrouplabel varchar(255),
    testyear integer NOT NULL,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (reportinggroupid)
);
SELECT
    CAST(cat.descriptorid AS bigint) AS reportinggroupid,
    TRIM(cat.codevalue) AS reportinggrouplabel,
    MAX(ia.testyear) AS testyear,
    cat.lastmodifieddate AS lastupdated
FROM edfi.assessmentitem ai
JOIN illuminate.assessment ia
    ON ia.assessmentid = ai.assessmentidentifier
JOIN edfi.descriptor cat
    ON cat.descriptorid = ai.assessmentitemcategorydescriptorid
WHERE ai.namespace = 'uri://illuminateed.com'
GROUP BY cat.descriptorid, cat.codevalue, cat.lastmodifieddate;

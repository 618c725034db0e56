-- model: illuminate.assessmentitem
-- inputs: edfi.assessmentitem, edfi.descriptor, illuminate.assessment
-- history: testyear
--
-- One row per item of an Illuminate assessment. questionsequence is the part of the item code
-- after ':' (Illuminate's "field:sequence" codes), else the item's position in its assessment
-- (codes in natural order). The flags mark items whose reporting group (the item category, see
-- illuminate.reportinggroup) names difficulty or fluency. maximum and rawpointsworth are the
-- item's maximum raw score; testyear is the assessment's.
CREATE TABLE illuminate.assessmentitem (
    assessmentid varchar(60) NOT NULL,
    questionid varchar(60) NOT NULL,
    questionnumber varchar(60),
    questionsequence varchar(10),
    maximum double precision,
    correctanswer varchar(50) NOT NULL,
    questiontype varchar(10),
    difficultyflag varchar(10),
    fluencyflag varchar(20),
    rawpointsworth decimal(13,10),
    testyear integer NOT NULL,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (assessmentid, questionid)
);
SELECT
    ai.assessmentidentifier AS assessmentid,
    ai.identificationcode AS questionid,
    ai.identificationcode AS questionnumber,
    COALESCE(
        NULLIF(SUBSTRING(SPLIT_PART(ai.identificationcode, ':', 2), 1, 10), ''),
        CAST(ROW_NUMBER() OVER (
            PARTITION BY ai.assessmentidentifier
            ORDER BY LENGTH(ai.identificationcode), ai.identificationcode
        ) AS varchar(10))
    ) AS questionsequence,
    CAST(ai.maxrawscore AS double precision) AS maximum,
    COALESCE(ai.correctresponse, '') AS correctanswer,
    SUBSTRING(cat.codevalue, 1, 10) AS questiontype,
    CASE WHEN cat.codevalue LIKE '%Difficulty%' THEN '1' ELSE '0' END AS difficultyflag,
    CASE WHEN cat.codevalue LIKE '%Fluency%' THEN '1' ELSE '0' END AS fluencyflag,
    ai.maxrawscore AS rawpointsworth,
    ia.testyear,
    ai.lastmodifieddate AS lastupdated
FROM edfi.assessmentitem ai
JOIN illuminate.assessment ia
    ON ia.assessmentid = ai.assessmentidentifier
LEFT JOIN edfi.descriptor cat
    ON cat.descriptorid = ai.assessmentitemcategorydescriptorid
WHERE ai.namespace = 'uri://illuminateed.com';

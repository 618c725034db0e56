-- model: illuminate.performancelevel
-- inputs: edfi.assessmentperformancelevel, edfi.descriptor, edfi.studentassessmentperformancelevel, illuminate.studentaggregatescore
-- incremental: studentnumber
-- history: testyear
--
-- One row per student and Illuminate assessment: the performance level of the student's most
-- recent attempt that has one (latest test date, then greatest studentassessmentid; if it has
-- levels under several reporting methods, the method and then the level whose code value sorts
-- first). performancelevelnumeric is the level's place among the assessment's levels for that
-- method, ordered by minimum score: 1 is the lowest (NULL when the assessment does not define
-- the level). The public table has no key; (assessmentid, studentnumber) is the one its readers
-- join on.
CREATE TABLE illuminate.performancelevel (
    assessmentid varchar(60) NOT NULL,
    performancelevelnumeric integer,
    performancelevel varchar(20),
    studentnumber varchar(10) NOT NULL,
    testyear integer,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (assessmentid, studentnumber)
);
SELECT
    p.assessmentid,
    p.performancelevelnumeric,
    p.performancelevel,
    p.studentnumber,
    p.testyear,
    p.lastupdated
FROM (
    SELECT
        sas.assessmentid,
        lv.levelnumber AS performancelevelnumeric,
        SUBSTRING(pld.codevalue, 1, 20) AS performancelevel,
        sas.studentnumber,
        sas.endyear AS testyear,
        sas.lastupdated,
        ROW_NUMBER() OVER (
            PARTITION BY sas.assessmentid, sas.studentnumber
            ORDER BY sas.testdate DESC, sas.studentassessmentid DESC, rmd.codevalue, pld.codevalue
        ) AS pick
    FROM edfi.studentassessmentperformancelevel sapl
    JOIN illuminate.studentaggregatescore sas
        ON sas.assessmentid = sapl.assessmentidentifier
        AND sas.studentassessmentid = sapl.studentassessmentidentifier
    JOIN edfi.descriptor pld
        ON pld.descriptorid = sapl.performanceleveldescriptorid
    JOIN edfi.descriptor rmd
        ON rmd.descriptorid = sapl.assessmentreportingmethoddescriptorid
    LEFT JOIN (
        SELECT
            apl.assessmentidentifier,
            apl.namespace,
            apl.assessmentreportingmethoddescriptorid,
            apl.performanceleveldescriptorid,
            CAST(RANK() OVER (
                PARTITION BY apl.assessmentidentifier, apl.namespace, apl.assessmentreportingmethoddescriptorid
                ORDER BY CASE
                    WHEN TRIM(apl.minimumscore) SIMILAR TO '[0-9]+([.][0-9]+)?'
                        THEN CAST(TRIM(apl.minimumscore) AS decimal(15,5))
                END
            ) AS integer) AS levelnumber
        FROM edfi.assessmentperformancelevel apl
    ) lv
        ON lv.assessmentidentifier = sapl.assessmentidentifier
        AND lv.namespace = sapl.namespace
        AND lv.assessmentreportingmethoddescriptorid = sapl.assessmentreportingmethoddescriptorid
        AND lv.performanceleveldescriptorid = sapl.performanceleveldescriptorid
    WHERE sapl.namespace = 'uri://illuminateed.com'
) p
WHERE p.pick = 1;

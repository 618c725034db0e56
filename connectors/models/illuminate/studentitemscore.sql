-- model: illuminate.studentitemscore
-- inputs: edfi.assessmentitem, edfi.descriptor, edfi.studentassessmentitem, illuminate.studentaggregatescore
-- incremental: studentnumber
-- history: endyear
--
-- Item results of each student's most recent attempt with item results at each Illuminate
-- assessment (the key is student, assessment and item): the latest test date, then the greatest
-- studentassessmentid.
-- Student, school, grade, date and year are those of the attempt in
-- illuminate.studentaggregatescore. iscorrect: the item result is "Correct". pointsearned is the
-- item's raw score result; rawpointsearned is that, else the item's maximum raw score when
-- correct and 0 when not.
CREATE TABLE illuminate.studentitemscore (
    studentnumber varchar(30) NOT NULL,
    assessmentid varchar(60) NOT NULL,
    studentassessmentid varchar(60) NOT NULL,
    testdate date,
    questionid varchar(60) NOT NULL,
    studentresponse varchar(255),
    pointsearned decimal(13,10),
    endyear integer NOT NULL,
    iscorrect boolean,
    lastupdated timestamp NOT NULL,
    schoolnumber integer,
    gradelevel varchar(20),
    rawpointsearned decimal(13,10),
    PRIMARY KEY (studentnumber, assessmentid, questionid)
);
SELECT
    x.studentnumber,
    x.assessmentid,
    x.studentassessmentid,
    x.testdate,
    x.questionid,
    x.studentresponse,
    x.pointsearned,
    x.endyear,
    x.iscorrect,
    x.lastupdated,
    x.schoolnumber,
    x.gradelevel,
    x.rawpointsearned
FROM (
    SELECT
        sas.studentnumber,
        sas.assessmentid,
        sas.studentassessmentid,
        sas.testdate,
        sai.identificationcode AS questionid,
        sai.assessmentresponse AS studentresponse,
        sai.rawscoreresult AS pointsearned,
        sas.endyear,
        COALESCE(ird.codevalue = 'Correct', FALSE) AS iscorrect,
        sai.createdate AS lastupdated,
        sas.schoolnumber,
        sas.gradelevel,
        COALESCE(
            sai.rawscoreresult,
            CASE WHEN ird.codevalue = 'Correct' THEN ai.maxrawscore ELSE 0 END
        ) AS rawpointsearned,
        DENSE_RANK() OVER (
            PARTITION BY sas.studentnumber, sas.assessmentid
            ORDER BY sas.testdate DESC, sas.studentassessmentid DESC
        ) AS attempt
    FROM illuminate.studentaggregatescore sas
    JOIN edfi.studentassessmentitem sai
        ON sai.assessmentidentifier = sas.assessmentid
        AND sai.studentassessmentidentifier = sas.studentassessmentid
        AND sai.namespace = 'uri://illuminateed.com'
    LEFT JOIN edfi.descriptor ird
        ON ird.descriptorid = sai.assessmentitemresultdescriptorid
    LEFT JOIN edfi.assessmentitem ai
        ON ai.assessmentidentifier = sai.assessmentidentifier
        AND ai.namespace = sai.namespace
        AND ai.identificationcode = sai.identificationcode
) x
WHERE x.attempt = 1;

-- model: illuminate.itemstandard
-- inputs: edfi.assessmentitemlearningstandard, edfi.learningstandard, illuminate.assessment
-- history: testyear
--
-- Each Illuminate item with the learning standards it is aligned to, for standards of the two
-- namespaces Illuminate publishes. Descriptions longer than the column are cut to 1000
-- characters.
CREATE TABLE illuminate.itemstandard (
    assessmentid varchar(60) NOT NULL,
    questionid varchar(60) NOT NULL,
    standardid varchar(60) NOT NULL,
    standardcode varchar(255),
    standarddescription varchar(1000),
    testyear integer NOT NULL,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (assessmentid, questionid, standardid)
);
SELECT
    ails.assessmentidentifier AS assessmentid,
    ails.identificationcode AS questionid,
    ls.learningstandardid AS standardid,
    ls.learningstandarditemcode AS standardcode,
    SUBSTRING(ls.description, 1, 1000) AS standarddescription,
    ia.testyear,
    ails.createdate AS lastupdated
FROM edfi.assessmentitemlearningstandard ails
JOIN illuminate.assessment ia
    ON ia.assessmentid = ails.assessmentidentifier
JOIN edfi.learningstandard ls
    ON ls.learningstandardid = ails.learningstandardid
WHERE ails.namespace = 'uri://illuminateed.com'
    AND ls.namespace IN (
        'uri://illuminateed.com/LearningStandards.xml',
        'uri://academicbenchmarks.com/LearningStandards.xml'
    );

-- model: illuminate.assessment
-- inputs: edfi.assessment, edfi.assessmentacademicsubject, edfi.assessmentassessedgradelevel, edfi.descriptor, edfi.studentassessment
-- history: testyear
--
-- One row per Illuminate assessment (namespace uri://illuminateed.com; state assessments in the
-- ODS are left out). testtype is the assessment category; subject is the first academic subject
-- by code value; grade is the lowest assessed grade (K = 0 … 12, others -1 and last). testyear
-- is the latest school year the assessment was given in (StudentAssessment.SchoolYear, else the
-- school year of the administration date), else the school year of its revision date, else of
-- its creation. School years end on June 30: a date from July on belongs to the next year.
-- docs/models.md ("illuminate") explains each choice.
CREATE TABLE illuminate.assessment (
    assessmentid varchar(60) NOT NULL,
    sourcesystem varchar(20),
    testtype varchar(20),
    testsubtype varchar(20),
    testsubjectgroup varchar(50),
    testsubject varchar(100),
    testgradelevel varchar(30),
    numerictestgradelevel integer,
    testname varchar(255),
    testcreatedby varchar(50),
    isnetworkassessment boolean,
    testyear integer NOT NULL,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (assessmentid)
);
SELECT
    a.assessmentidentifier AS assessmentid,
    'Illuminate' AS sourcesystem,
    SUBSTRING(cat.codevalue, 1, 20) AS testtype,
    -- Weekly quizzes are told apart by the number after '#' in the title ("WQ 7").
    CASE
        WHEN cat.codevalue = 'Weekly Quizzes' AND POSITION('#' IN a.assessmenttitle) > 0
            THEN 'WQ ' || TRIM(REPLACE(SUBSTRING(a.assessmenttitle, POSITION('#' IN a.assessmenttitle) + 1, 2), '.', ' '))
        ELSE SUBSTRING(cat.codevalue, 1, 20)
    END AS testsubtype,
    subj.codevalue AS testsubjectgroup,
    subj.codevalue AS testsubject,
    SUBSTRING(gl.codevalue, 1, 30) AS testgradelevel,
    gl.numericgrade AS numerictestgradelevel,
    a.assessmenttitle AS testname,
    'testadmin' AS testcreatedby,
    TRUE AS isnetworkassessment,
    COALESCE(
        MAX(COALESCE(
            CAST(sa.schoolyear AS integer),
            CAST(EXTRACT(YEAR FROM sa.administrationdate) AS integer)
                + CASE WHEN EXTRACT(MONTH FROM sa.administrationdate) >= 7 THEN 1 ELSE 0 END
        )),
        CAST(EXTRACT(YEAR FROM COALESCE(a.revisiondate, CAST(a.createdate AS date))) AS integer)
            + CASE WHEN EXTRACT(MONTH FROM COALESCE(a.revisiondate, CAST(a.createdate AS date))) >= 7 THEN 1 ELSE 0 END
    ) AS testyear,
    a.lastmodifieddate AS lastupdated
FROM edfi.assessment a
LEFT JOIN edfi.descriptor cat
    ON cat.descriptorid = a.assessmentcategorydescriptorid
LEFT JOIN (
    SELECT
        aas.assessmentidentifier,
        aas.namespace,
        d.codevalue,
        ROW_NUMBER() OVER (
            PARTITION BY aas.assessmentidentifier, aas.namespace
            ORDER BY d.codevalue
        ) AS pick
    FROM edfi.assessmentacademicsubject aas
    JOIN edfi.descriptor d
        ON d.descriptorid = aas.academicsubjectdescriptorid
) subj
    ON subj.assessmentidentifier = a.assessmentidentifier
    AND subj.namespace = a.namespace
    AND subj.pick = 1
LEFT JOIN (
    SELECT
        g.assessmentidentifier,
        g.namespace,
        g.codevalue,
        g.numericgrade,
        ROW_NUMBER() OVER (
            PARTITION BY g.assessmentidentifier, g.namespace
            ORDER BY CASE WHEN g.numericgrade < 0 THEN 1 ELSE 0 END, g.numericgrade, g.codevalue
        ) AS pick
    FROM (
        SELECT
            aagl.assessmentidentifier,
            aagl.namespace,
            d.codevalue,
            CASE SPLIT_PART(LOWER(d.codevalue), ' ', 1)
                WHEN 'kindergarten' THEN 0
                WHEN 'first' THEN 1
                WHEN 'second' THEN 2
                WHEN 'third' THEN 3
                WHEN 'fourth' THEN 4
                WHEN 'fifth' THEN 5
                WHEN 'sixth' THEN 6
                WHEN 'seventh' THEN 7
                WHEN 'eighth' THEN 8
                WHEN 'ninth' THEN 9
                WHEN 'tenth' THEN 10
                WHEN 'eleventh' THEN 11
                WHEN 'twelfth' THEN 12
                ELSE -1
            END AS numericgrade
        FROM edfi.assessmentassessedgradelevel aagl
        JOIN edfi.descriptor d
            ON d.descriptorid = aagl.gradeleveldescriptorid
    ) g
) gl
    ON gl.assessmentidentifier = a.assessmentidentifier
    AND gl.namespace = a.namespace
    AND gl.pick = 1
LEFT JOIN edfi.studentassessment sa
    ON sa.assessmentidentifier = a.assessmentidentifier
    AND sa.namespace = a.namespace
WHERE a.namespace = 'uri://illuminateed.com'
GROUP BY
    a.assessmentidentifier,
    a.assessmenttitle,
    a.revisiondate,
    a.createdate,
    a.lastmodifieddate,
    cat.codevalue,
    subj.codevalue,
    gl.codevalue,
    gl.numericgrade;

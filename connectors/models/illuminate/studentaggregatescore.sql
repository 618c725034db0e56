-- model: illuminate.studentaggregatescore
-- inputs: edfi.assessment, edfi.assessmentitem, edfi.descriptor, edfi.student, edfi.studentassessment, edfi.studentassessmentscoreresult, edfi.studentschoolassociation
-- incremental: studentnumber
-- history: endyear
--
-- One row per Illuminate student assessment (every attempt, every school year). rawscore and
-- testscore are the "Raw score" and "Scale score" results (non-numeric results are NULL);
-- pointspossible is the sum of the items' maximum raw scores, else the assessment's. The school
-- is the student's enrollment on the test date, else the latest one begun before it, else the
-- first one begun after it; the grade is the grade when assessed, else that enrollment's entry
-- grade (code value cut to 20 characters). endyear is StudentAssessment.SchoolYear, else the
-- school year of the administration date (years end on June 30).
CREATE TABLE illuminate.studentaggregatescore (
    studentnumber varchar(30) NOT NULL,
    assessmentid varchar(60) NOT NULL,
    testdate date,
    schoolnumber integer,
    gradelevel varchar(20),
    rawscore decimal(5,2),
    pointspossible decimal(5,2),
    testscore decimal(5,2),
    endyear integer NOT NULL,
    lastupdated timestamp NOT NULL,
    studentassessmentid varchar(60) NOT NULL,
    PRIMARY KEY (studentassessmentid)
);
SELECT
    p.studentnumber,
    p.assessmentidentifier AS assessmentid,
    CAST(p.administrationdate AS date) AS testdate,
    p.schoolid AS schoolnumber,
    SUBSTRING(COALESCE(assessedgrade.codevalue, entrygrade.codevalue), 1, 20) AS gradelevel,
    CAST(MAX(CASE
        WHEN rm.codevalue = 'Raw score' AND TRIM(r.result) SIMILAR TO '[0-9]+([.][0-9]+)?'
            THEN CAST(TRIM(r.result) AS decimal(15,5))
    END) AS decimal(5,2)) AS rawscore,
    CAST(COALESCE(items.points, a.maxrawscore) AS decimal(5,2)) AS pointspossible,
    CAST(MAX(CASE
        WHEN rm.codevalue = 'Scale score' AND TRIM(r.result) SIMILAR TO '[0-9]+([.][0-9]+)?'
            THEN CAST(TRIM(r.result) AS decimal(15,5))
    END) AS decimal(5,2)) AS testscore,
    COALESCE(
        CAST(p.schoolyear AS integer),
        CAST(EXTRACT(YEAR FROM p.administrationdate) AS integer)
            + CASE WHEN EXTRACT(MONTH FROM p.administrationdate) >= 7 THEN 1 ELSE 0 END
    ) AS endyear,
    p.lastmodifieddate AS lastupdated,
    p.studentassessmentidentifier AS studentassessmentid
FROM (
    -- Each student assessment with the enrollment it counts under (pick = 1). Base tables are
    -- joined directly, so that their keys serve the joins even before statistics exist.
    SELECT
        s.studentuniqueid AS studentnumber,
        sa.assessmentidentifier,
        sa.namespace,
        sa.studentassessmentidentifier,
        sa.studentusi,
        sa.administrationdate,
        sa.schoolyear,
        sa.whenassessedgradeleveldescriptorid,
        sa.lastmodifieddate,
        ssa.schoolid,
        ssa.entrygradeleveldescriptorid,
        ROW_NUMBER() OVER (
            PARTITION BY sa.assessmentidentifier, sa.namespace, sa.studentassessmentidentifier, sa.studentusi
            ORDER BY
                CASE
                    WHEN ssa.entrydate <= CAST(sa.administrationdate AS date)
                        AND (ssa.exitwithdrawdate IS NULL
                            OR ssa.exitwithdrawdate >= CAST(sa.administrationdate AS date))
                        THEN 0
                    WHEN ssa.entrydate <= CAST(sa.administrationdate AS date) THEN 1
                    ELSE 2
                END,
                CASE WHEN ssa.entrydate > CAST(sa.administrationdate AS date) THEN ssa.entrydate END,
                ssa.entrydate DESC,
                ssa.schoolid
        ) AS pick
    FROM edfi.studentassessment sa
    JOIN edfi.student s
        ON s.studentusi = sa.studentusi
    LEFT JOIN edfi.studentschoolassociation ssa
        ON ssa.studentusi = sa.studentusi
    WHERE sa.namespace = 'uri://illuminateed.com'
) p
LEFT JOIN edfi.assessment a
    ON a.assessmentidentifier = p.assessmentidentifier
    AND a.namespace = p.namespace
LEFT JOIN (
    SELECT ai.assessmentidentifier, ai.namespace, SUM(ai.maxrawscore) AS points
    FROM edfi.assessmentitem ai
    GROUP BY ai.assessmentidentifier, ai.namespace
) items
    ON items.assessmentidentifier = p.assessmentidentifier
    AND items.namespace = p.namespace
LEFT JOIN edfi.studentassessmentscoreresult r
    ON r.assessmentidentifier = p.assessmentidentifier
    AND r.namespace = p.namespace
    AND r.studentassessmentidentifier = p.studentassessmentidentifier
    AND r.studentusi = p.studentusi
LEFT JOIN edfi.descriptor rm
    ON rm.descriptorid = r.assessmentreportingmethoddescriptorid
LEFT JOIN edfi.descriptor assessedgrade
    ON assessedgrade.descriptorid = p.whenassessedgradeleveldescriptorid
LEFT JOIN edfi.descriptor entrygrade
    ON entrygrade.descriptorid = p.entrygradeleveldescriptorid
WHERE p.pick = 1
GROUP BY
    p.studentnumber,
    p.assessmentidentifier,
    p.namespace,
    p.studentassessmentidentifier,
    p.studentusi,
    p.administrationdate,
    p.schoolid,
    assessedgrade.codevalue,
    entrygrade.codevalue,
    items.points,
    a.maxrawscore,
    p.schoolyear,
    p.lastmodifieddate;

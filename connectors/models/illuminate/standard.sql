-- model: illuminate.standard
-- inputs: edfi.learningstandard, illuminate.itemstandard
-- history: testyear
--
-- The learning standards some Illuminate item is aligned to (illuminate.itemstandard); testyear
-- is the latest test year of those items. standardlabel and customcode are Illuminate's own
-- labels, which the ODS does not carry: they are NULL.
CREATE TABLE illuminate.standard (
    standardid varchar(60) NOT NULL,
    standardcode varchar(255),
    standardlabel varchar(255),
    customcode varchar(200),
    standarddescription varchar(1000),
    testyear integer NOT NULL,
    lastupdated timestamp NOT NULL,
    PRIMARY KEY (standardid)
);
SELECT
    ls.learningstandardid AS standardid,
    ls.learningstandarditemcode AS standardcode,
    CAST(NULL AS varchar(255)) AS standardlabel,
    CAST(NULL AS varchar(200)) AS customcode,
    SUBSTRING(ls.description, 1, 1000) AS standarddescription,
    aligned.testyear,
    ls.lastmodifieddate AS lastupdated
FROM edfi.learningstandard ls
JOIN (
    SELECT its.standardid, MAX(its.testyear) AS testyear
    FROM illuminate.itemstandard its
    GROUP BY its.standardid
) aligned
    ON aligned.standardid = ls.learningstandardid;

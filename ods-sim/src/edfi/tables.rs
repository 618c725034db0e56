//! The Ed-Fi ODS tables of both seed pipelines, as declared by the Ed-Fi ODS/API v5.2 MsSql
//! `0020-Tables.sql` (Data Standard 3.3): columns in order, SQL Server types and primary keys.
//!
//! The definitions are data, in a compact declarative form: a table name at the start of a line,
//! then one indented line per column: `*` marks a primary-key column (the key columns come first, in
//! key order, as in the Ed-Fi DDL), then name and T-SQL type, then `identity` for an
//! `IDENTITY(1,1)` column and `null` for a nullable column.

use crate::types::{ColumnDef, ColumnDefault, SqlType, TableDef};

/// The schema of every Ed-Fi table.
pub const SCHEMA: &str = "edfi";

/// Tables read by pipeline "IC" (students, enrollment, schedules).
pub const IC: [&str; 22] = [
    "Calendar",
    "CalendarDate",
    "CalendarDateCalendarEvent",
    "CalendarEventDescriptor",
    "Course",
    "CourseIdentificationCode",
    "Descriptor",
    "EducationOrganization",
    "EducationOrganizationAddress",
    "GradeLevelDescriptor",
    "School",
    "SchoolGradeLevel",
    "SchoolYearType",
    "Section",
    "Session",
    "Staff",
    "StaffSectionAssociation",
    "Student",
    "StudentEducationOrganizationAssociationElectronicMail",
    "StudentEducationOrganizationAssociationRace",
    "StudentSchoolAssociation",
    "StudentSectionAssociation",
];

/// Tables read by pipeline "Illuminate" (assessments).
pub const ILLUMINATE: [&str; 16] = [
    "Assessment",
    "AssessmentAcademicSubject",
    "AssessmentAssessedGradeLevel",
    "AssessmentItem",
    "AssessmentItemCategoryDescriptor",
    "AssessmentItemLearningStandard",
    "AssessmentItemResultDescriptor",
    "AssessmentPerformanceLevel",
    "AssessmentReportingMethodDescriptor",
    "AssessmentScore",
    "Descriptor",
    "LearningStandard",
    "StudentAssessment",
    "StudentAssessmentItem",
    "StudentAssessmentPerformanceLevel",
    "StudentAssessmentScoreResult",
];

const DDL: &str = "
Calendar
    *CalendarCode nvarchar(60)
    *SchoolId int
    *SchoolYear smallint
     CalendarTypeDescriptorId int
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
CalendarDate
    *CalendarCode nvarchar(60)
    *Date date
    *SchoolId int
    *SchoolYear smallint
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
CalendarDateCalendarEvent
    *CalendarCode nvarchar(60)
    *CalendarEventDescriptorId int
    *Date date
    *SchoolId int
    *SchoolYear smallint
     CreateDate datetime2(7)
CalendarEventDescriptor
    *CalendarEventDescriptorId int
Course
    *CourseCode nvarchar(60)
    *EducationOrganizationId int
     CourseTitle nvarchar(60)
     NumberOfParts int
     AcademicSubjectDescriptorId int null
     CourseDescription nvarchar(1024) null
     TimeRequiredForCompletion int null
     DateCourseAdopted date null
     HighSchoolCourseRequirement bit null
     CourseGPAApplicabilityDescriptorId int null
     CourseDefinedByDescriptorId int null
     MinimumAvailableCredits decimal(9,3) null
     MinimumAvailableCreditTypeDescriptorId int null
     MinimumAvailableCreditConversion decimal(9,2) null
     MaximumAvailableCredits decimal(9,3) null
     MaximumAvailableCreditTypeDescriptorId int null
     MaximumAvailableCreditConversion decimal(9,2) null
     CareerPathwayDescriptorId int null
     MaxCompletionsForCredit int null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
CourseIdentificationCode
    *CourseCode nvarchar(60)
    *CourseIdentificationSystemDescriptorId int
    *EducationOrganizationId int
     IdentificationCode nvarchar(60)
     AssigningOrganizationIdentificationCode nvarchar(60) null
     CourseCatalogURL nvarchar(255) null
     CreateDate datetime2(7)
Descriptor
    *DescriptorId int identity
     Namespace nvarchar(255)
     CodeValue nvarchar(50)
     ShortDescription nvarchar(75)
     Description nvarchar(1024) null
     PriorDescriptorId int null
     EffectiveBeginDate date null
     EffectiveEndDate date null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
EducationOrganization
    *EducationOrganizationId int
     NameOfInstitution nvarchar(75)
     ShortNameOfInstitution nvarchar(75) null
     WebSite nvarchar(255) null
     OperationalStatusDescriptorId int null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
EducationOrganizationAddress
    *AddressTypeDescriptorId int
    *City nvarchar(30)
    *EducationOrganizationId int
    *PostalCode nvarchar(17)
    *StateAbbreviationDescriptorId int
    *StreetNumberName nvarchar(150)
     ApartmentRoomSuiteNumber nvarchar(50) null
     BuildingSiteNumber nvarchar(20) null
     NameOfCounty nvarchar(30) null
     CountyFIPSCode nvarchar(5) null
     Latitude nvarchar(20) null
     Longitude nvarchar(20) null
     DoNotPublishIndicator bit null
     CongressionalDistrict nvarchar(30) null
     LocaleDescriptorId int null
     CreateDate datetime2(7)
GradeLevelDescriptor
    *GradeLevelDescriptorId int
School
    *SchoolId int
     SchoolTypeDescriptorId int null
     CharterStatusDescriptorId int null
     TitleIPartASchoolDesignationDescriptorId int null
     MagnetSpecialProgramEmphasisSchoolDescriptorId int null
     AdministrativeFundingControlDescriptorId int null
     InternetAccessDescriptorId int null
     LocalEducationAgencyId int null
     CharterApprovalAgencyTypeDescriptorId int null
     CharterApprovalSchoolYear smallint null
SchoolGradeLevel
    *GradeLevelDescriptorId int
    *SchoolId int
     CreateDate datetime2(7)
SchoolYearType
    *SchoolYear smallint
     SchoolYearDescription nvarchar(50)
     CurrentSchoolYear bit
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
Section
    *LocalCourseCode nvarchar(60)
    *SchoolId int
    *SchoolYear smallint
    *SectionIdentifier nvarchar(255)
    *SessionName nvarchar(60)
     SequenceOfCourse int null
     EducationalEnvironmentDescriptorId int null
     MediumOfInstructionDescriptorId int null
     PopulationServedDescriptorId int null
     AvailableCredits decimal(9,3) null
     AvailableCreditTypeDescriptorId int null
     AvailableCreditConversion decimal(9,2) null
     InstructionLanguageDescriptorId int null
     LocationSchoolId int null
     LocationClassroomIdentificationCode nvarchar(60) null
     OfficialAttendancePeriod bit null
     SectionName nvarchar(100) null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
Session
    *SchoolId int
    *SchoolYear smallint
    *SessionName nvarchar(60)
     BeginDate date
     EndDate date
     TermDescriptorId int
     TotalInstructionalDays int
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
Staff
    *StaffUSI int identity
     PersonalTitlePrefix nvarchar(30) null
     FirstName nvarchar(75)
     MiddleName nvarchar(75) null
     LastSurname nvarchar(75)
     GenerationCodeSuffix nvarchar(10) null
     MaidenName nvarchar(75) null
     SexDescriptorId int null
     BirthDate date null
     HispanicLatinoEthnicity bit null
     OldEthnicityDescriptorId int null
     CitizenshipStatusDescriptorId int null
     HighestCompletedLevelOfEducationDescriptorId int null
     YearsOfPriorProfessionalExperience decimal(5,2) null
     YearsOfPriorTeachingExperience decimal(5,2) null
     LoginId nvarchar(60) null
     HighlyQualifiedTeacher bit null
     PersonId nvarchar(32) null
     SourceSystemDescriptorId int null
     StaffUniqueId nvarchar(32)
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
StaffSectionAssociation
    *LocalCourseCode nvarchar(60)
    *SchoolId int
    *SchoolYear smallint
    *SectionIdentifier nvarchar(255)
    *SessionName nvarchar(60)
    *StaffUSI int
     ClassroomPositionDescriptorId int
     BeginDate date null
     EndDate date null
     HighlyQualifiedTeacher bit null
     TeacherStudentDataLinkExclusion bit null
     PercentageContribution decimal(5,4) null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
Student
    *StudentUSI int identity
     PersonalTitlePrefix nvarchar(30) null
     FirstName nvarchar(75)
     MiddleName nvarchar(75) null
     LastSurname nvarchar(75)
     GenerationCodeSuffix nvarchar(10) null
     MaidenName nvarchar(75) null
     BirthDate date
     BirthCity nvarchar(30) null
     BirthStateAbbreviationDescriptorId int null
     BirthInternationalProvince nvarchar(150) null
     BirthCountryDescriptorId int null
     DateEnteredUS date null
     MultipleBirthStatus bit null
     BirthSexDescriptorId int null
     CitizenshipStatusDescriptorId int null
     PersonId nvarchar(32) null
     SourceSystemDescriptorId int null
     StudentUniqueId nvarchar(32)
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
StudentEducationOrganizationAssociationElectronicMail
    *EducationOrganizationId int
    *ElectronicMailAddress nvarchar(128)
    *ElectronicMailTypeDescriptorId int
    *StudentUSI int
     PrimaryEmailAddressIndicator bit null
     DoNotPublishIndicator bit null
     CreateDate datetime2(7)
StudentEducationOrganizationAssociationRace
    *EducationOrganizationId int
    *RaceDescriptorId int
    *StudentUSI int
     CreateDate datetime2(7)
StudentSchoolAssociation
    *EntryDate date
    *SchoolId int
    *StudentUSI int
     PrimarySchool bit null
     EntryGradeLevelDescriptorId int
     EntryGradeLevelReasonDescriptorId int null
     EntryTypeDescriptorId int null
     RepeatGradeIndicator bit null
     ClassOfSchoolYear smallint null
     SchoolChoiceTransfer bit null
     ExitWithdrawDate date null
     ExitWithdrawTypeDescriptorId int null
     ResidencyStatusDescriptorId int null
     GraduationPlanTypeDescriptorId int null
     EducationOrganizationId int null
     GraduationSchoolYear smallint null
     EmployedWhileEnrolled bit null
     CalendarCode nvarchar(60) null
     SchoolYear smallint null
     FullTimeEquivalency decimal(3,2) null
     TermCompletionIndicator bit null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
StudentSectionAssociation
    *BeginDate date
    *LocalCourseCode nvarchar(60)
    *SchoolId int
    *SchoolYear smallint
    *SectionIdentifier nvarchar(255)
    *SessionName nvarchar(60)
    *StudentUSI int
     EndDate date null
     HomeroomIndicator bit null
     RepeatIdentifierDescriptorId int null
     TeacherStudentDataLinkExclusion bit null
     AttemptStatusDescriptorId int null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
Assessment
    *AssessmentIdentifier nvarchar(60)
    *Namespace nvarchar(255)
     AssessmentTitle nvarchar(100)
     AssessmentCategoryDescriptorId int null
     AssessmentForm nvarchar(60) null
     AssessmentVersion int null
     RevisionDate date null
     MaxRawScore decimal(15,5) null
     Nomenclature nvarchar(35) null
     AssessmentFamily nvarchar(60) null
     EducationOrganizationId int null
     AdaptiveAssessment bit null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
AssessmentAcademicSubject
    *AcademicSubjectDescriptorId int
    *AssessmentIdentifier nvarchar(60)
    *Namespace nvarchar(255)
     CreateDate datetime2(7)
AssessmentAssessedGradeLevel
    *AssessmentIdentifier nvarchar(60)
    *GradeLevelDescriptorId int
    *Namespace nvarchar(255)
     CreateDate datetime2(7)
AssessmentItem
    *AssessmentIdentifier nvarchar(60)
    *IdentificationCode nvarchar(60)
    *Namespace nvarchar(255)
     AssessmentItemCategoryDescriptorId int null
     MaxRawScore decimal(15,5) null
     ItemText nvarchar(1024) null
     CorrectResponse nvarchar(20) null
     ExpectedTimeAssessed nvarchar(30) null
     Nomenclature nvarchar(35) null
     AssessmentItemURI nvarchar(255) null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
AssessmentItemCategoryDescriptor
    *AssessmentItemCategoryDescriptorId int
AssessmentItemLearningStandard
    *AssessmentIdentifier nvarchar(60)
    *IdentificationCode nvarchar(60)
    *LearningStandardId nvarchar(60)
    *Namespace nvarchar(255)
     CreateDate datetime2(7)
AssessmentItemResultDescriptor
    *AssessmentItemResultDescriptorId int
AssessmentPerformanceLevel
    *AssessmentIdentifier nvarchar(60)
    *AssessmentReportingMethodDescriptorId int
    *Namespace nvarchar(255)
    *PerformanceLevelDescriptorId int
     MinimumScore nvarchar(35) null
     MaximumScore nvarchar(35) null
     ResultDatatypeTypeDescriptorId int null
     CreateDate datetime2(7)
AssessmentReportingMethodDescriptor
    *AssessmentReportingMethodDescriptorId int
AssessmentScore
    *AssessmentIdentifier nvarchar(60)
    *AssessmentReportingMethodDescriptorId int
    *Namespace nvarchar(255)
     MinimumScore nvarchar(35) null
     MaximumScore nvarchar(35) null
     ResultDatatypeTypeDescriptorId int null
     CreateDate datetime2(7)
LearningStandard
    *LearningStandardId nvarchar(60)
     Description nvarchar(1024)
     LearningStandardItemCode nvarchar(60) null
     URI nvarchar(255) null
     CourseTitle nvarchar(60) null
     SuccessCriteria nvarchar(150) null
     ParentLearningStandardId nvarchar(60) null
     Namespace nvarchar(255)
     LearningStandardCategoryDescriptorId int null
     LearningStandardScopeDescriptorId int null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
StudentAssessment
    *AssessmentIdentifier nvarchar(60)
    *Namespace nvarchar(255)
    *StudentAssessmentIdentifier nvarchar(60)
    *StudentUSI int
     AdministrationDate datetime2(7)
     AdministrationEndDate datetime2(7) null
     SerialNumber nvarchar(60) null
     AdministrationLanguageDescriptorId int null
     AdministrationEnvironmentDescriptorId int null
     RetestIndicatorDescriptorId int null
     ReasonNotTestedDescriptorId int null
     WhenAssessedGradeLevelDescriptorId int null
     EventCircumstanceDescriptorId int null
     EventDescription nvarchar(1024) null
     SchoolYear smallint null
     PlatformTypeDescriptorId int null
     Discriminator nvarchar(128) null
     CreateDate datetime2(7)
     LastModifiedDate datetime2(7)
     Id uniqueidentifier
StudentAssessmentItem
    *AssessmentIdentifier nvarchar(60)
    *IdentificationCode nvarchar(60)
    *Namespace nvarchar(255)
    *StudentAssessmentIdentifier nvarchar(60)
    *StudentUSI int
     AssessmentResponse nvarchar(60) null
     DescriptiveFeedback nvarchar(1024) null
     ResponseIndicatorDescriptorId int null
     AssessmentItemResultDescriptorId int
     RawScoreResult decimal(15,5) null
     TimeAssessed nvarchar(30) null
     CreateDate datetime2(7)
StudentAssessmentPerformanceLevel
    *AssessmentIdentifier nvarchar(60)
    *AssessmentReportingMethodDescriptorId int
    *Namespace nvarchar(255)
    *PerformanceLevelDescriptorId int
    *StudentAssessmentIdentifier nvarchar(60)
    *StudentUSI int
     PerformanceLevelMet bit
     CreateDate datetime2(7)
StudentAssessmentScoreResult
    *AssessmentIdentifier nvarchar(60)
    *AssessmentReportingMethodDescriptorId int
    *Namespace nvarchar(255)
    *StudentAssessmentIdentifier nvarchar(60)
    *StudentUSI int
     Result nvarchar(35)
     ResultDatatypeTypeDescriptorId int
     CreateDate datetime2(7)
";

/// A table's identity column (`IDENTITY(1,1)` in the Ed-Fi DDL), if it has one.
pub fn identity_column(table: &str) -> Option<&'static str> {
    parse().find_map(|(name, cols)| {
        if name != table {
            return None;
        }
        cols.into_iter().find(|c| c.identity).map(|c| c.name)
    })
}

/// All 37 tables, pipeline IC's first, in the order of [`IC`] then [`ILLUMINATE`].
pub fn tables() -> Vec<TableDef> {
    parse()
        .map(|(name, cols)| TableDef {
            schema: SCHEMA.to_string(),
            name: name.to_string(),
            primary_key: cols
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.to_string())
                .collect(),
            columns: cols
                .into_iter()
                .map(|c| ColumnDef {
                    name: c.name.to_string(),
                    default: ed_fi_default(c.name, &c.ty),
                    ty: c.ty,
                    nullable: c.nullable,
                    identity: c.identity,
                })
                .collect(),
        })
        .collect()
}

/// The defaults the Ed-Fi DDL declares: `getdate()` for `CreateDate` and `LastModifiedDate`,
/// `newid()` for `Id`.
fn ed_fi_default(column: &str, ty: &SqlType) -> Option<ColumnDefault> {
    match (column, ty) {
        ("CreateDate" | "LastModifiedDate", SqlType::DateTime2 { .. }) => {
            Some(ColumnDefault::GetDate)
        }
        ("Id", SqlType::UniqueIdentifier) => Some(ColumnDefault::NewId),
        _ => None,
    }
}

/// One table's definition by name (schema `edfi`).
pub fn table(name: &str) -> Option<TableDef> {
    tables().into_iter().find(|t| t.name == name)
}

struct Col {
    name: &'static str,
    ty: SqlType,
    key: bool,
    identity: bool,
    nullable: bool,
}

fn parse() -> impl Iterator<Item = (&'static str, Vec<Col>)> {
    let mut out: Vec<(&'static str, Vec<Col>)> = Vec::new();
    for line in DDL.lines().filter(|l| !l.trim().is_empty()) {
        if !line.starts_with(' ') {
            out.push((line.trim(), Vec::new()));
            continue;
        }
        let line = line.trim();
        let (key, line) = match line.strip_prefix('*') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut words = line.split_whitespace();
        let name = words.next().expect("column name");
        let ty = parse_type(words.next().expect("column type"));
        let flags: Vec<&str> = words.collect();
        let cols = &mut out.last_mut().expect("a table before its columns").1;
        cols.push(Col {
            name,
            ty,
            key,
            identity: flags.contains(&"identity"),
            nullable: flags.contains(&"null"),
        });
    }
    out.into_iter()
}

/// Parses a T-SQL type as written in the compact definitions, e.g. `nvarchar(60)`, `decimal(9,3)`.
fn parse_type(s: &str) -> SqlType {
    let (base, args) = match s.split_once('(') {
        Some((b, a)) => (b, Some(a.trim_end_matches(')'))),
        None => (s, None),
    };
    let num = |a: Option<&str>| -> u16 { a.expect("length").parse().expect("numeric length") };
    match base {
        "bit" => SqlType::Bit,
        "tinyint" => SqlType::TinyInt,
        "smallint" => SqlType::SmallInt,
        "int" => SqlType::Int,
        "bigint" => SqlType::BigInt,
        "date" => SqlType::Date,
        "datetime" => SqlType::DateTime,
        "uniqueidentifier" => SqlType::UniqueIdentifier,
        "datetime2" => SqlType::DateTime2 {
            scale: num(args) as u8,
        },
        "nvarchar" => SqlType::NVarChar(Some(num(args))),
        "varchar" => SqlType::VarChar(Some(num(args))),
        "decimal" => {
            let (p, s) = args.and_then(|a| a.split_once(',')).expect("decimal(p,s)");
            SqlType::Decimal {
                precision: p.parse().expect("precision"),
                scale: s.parse().expect("scale"),
            }
        }
        other => panic!("unknown type {other} in the Ed-Fi table definitions"),
    }
}

/// SQL Server `CREATE TABLE` DDL for a table, in the style of the Ed-Fi `0020-Tables.sql`:
/// bracketed names, the identity column as `IDENTITY(1,1)`, a clustered primary key named
/// `<table>_PK`, and the column defaults.
pub fn create_table_tsql(def: &TableDef) -> String {
    let mut lines: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("    [{}] {}", c.name, c.ty.ddl());
            if c.identity {
                s.push_str(" IDENTITY(1,1)");
            }
            s.push_str(if c.nullable { " NULL" } else { " NOT NULL" });
            if let Some(d) = c.default {
                s.push_str(&format!(
                    " CONSTRAINT [{}_DF_{}] DEFAULT ({})",
                    def.name,
                    c.name,
                    d.tsql()
                ));
            }
            s
        })
        .collect();
    if !def.primary_key.is_empty() {
        let keys: Vec<String> = def
            .primary_key
            .iter()
            .map(|k| format!("[{k}] ASC"))
            .collect();
        lines.push(format!(
            "    CONSTRAINT [{}_PK] PRIMARY KEY CLUSTERED ({})",
            def.name,
            keys.join(", ")
        ));
    }
    format!(
        "CREATE TABLE [{}].[{}] (\n{}\n);\n",
        def.schema,
        def.name,
        lines.join(",\n")
    )
}

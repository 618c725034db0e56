//! The Ed-Fi table definitions against facts of the ODS/API v5.2 (Data Standard 3.3) DDL.

use ods_sim::edfi;
use ods_sim::types::{SqlType, TableDef};
use std::collections::BTreeSet;

fn table(name: &str) -> TableDef {
    edfi::table(name).unwrap_or_else(|| panic!("no table {name}"))
}

fn column_type(t: &TableDef, column: &str) -> (SqlType, bool) {
    let c = t
        .columns
        .iter()
        .find(|c| c.name == column)
        .unwrap_or_else(|| panic!("no column {}.{column}", t.name));
    (c.ty.clone(), c.nullable)
}

#[test]
fn edfi_tables_are_the_37_of_both_pipelines() {
    let tables = edfi::tables();
    assert_eq!(tables.len(), 37);
    let names: BTreeSet<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 37, "duplicate table names");
    assert_eq!(edfi::ic().len(), 22);
    assert_eq!(edfi::illuminate().len(), 16);
    let groups: BTreeSet<&str> = edfi::ic().into_iter().chain(edfi::illuminate()).collect();
    assert_eq!(groups, names);
    assert!(edfi::ic().contains(&"Descriptor") && edfi::illuminate().contains(&"Descriptor"));
    for t in &tables {
        assert_eq!(t.schema, "edfi");
        assert!(!t.primary_key.is_empty(), "{} has no primary key", t.name);
        for k in &t.primary_key {
            let c = t.columns.iter().find(|c| &c.name == k);
            assert!(c.is_some_and(|c| !c.nullable), "{}: key column {k}", t.name);
        }
        let cols: BTreeSet<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cols.len(), t.columns.len(), "{}: duplicate columns", t.name);
    }
}

#[test]
fn edfi_primary_keys_match_the_ods() {
    let pk = |n: &str| table(n).primary_key;
    assert_eq!(pk("Student"), ["StudentUSI"]);
    assert_eq!(
        pk("StudentSchoolAssociation"),
        ["EntryDate", "SchoolId", "StudentUSI"]
    );
    assert_eq!(
        pk("StudentSectionAssociation"),
        [
            "BeginDate",
            "LocalCourseCode",
            "SchoolId",
            "SchoolYear",
            "SectionIdentifier",
            "SessionName",
            "StudentUSI"
        ]
    );
    assert_eq!(pk("Descriptor"), ["DescriptorId"]);
    assert_eq!(pk("Calendar"), ["CalendarCode", "SchoolId", "SchoolYear"]);
    assert_eq!(
        pk("EducationOrganizationAddress"),
        [
            "AddressTypeDescriptorId",
            "City",
            "EducationOrganizationId",
            "PostalCode",
            "StateAbbreviationDescriptorId",
            "StreetNumberName"
        ]
    );
    assert_eq!(
        pk("StudentAssessment"),
        [
            "AssessmentIdentifier",
            "Namespace",
            "StudentAssessmentIdentifier",
            "StudentUSI"
        ]
    );
    assert_eq!(
        pk("StudentAssessmentPerformanceLevel"),
        [
            "AssessmentIdentifier",
            "AssessmentReportingMethodDescriptorId",
            "Namespace",
            "PerformanceLevelDescriptorId",
            "StudentAssessmentIdentifier",
            "StudentUSI"
        ]
    );
    assert_eq!(pk("LearningStandard"), ["LearningStandardId"]);
    assert_eq!(pk("Assessment"), ["AssessmentIdentifier", "Namespace"]);
}

#[test]
fn edfi_types_match_the_ods() {
    let student = table("Student");
    assert_eq!(column_type(&student, "StudentUSI"), (SqlType::Int, false));
    assert_eq!(
        column_type(&student, "StudentUniqueId"),
        (SqlType::NVarChar(Some(32)), false)
    );
    assert_eq!(
        column_type(&student, "MiddleName"),
        (SqlType::NVarChar(Some(75)), true)
    );
    assert_eq!(column_type(&student, "BirthDate"), (SqlType::Date, false));
    assert_eq!(
        column_type(&student, "Id"),
        (SqlType::UniqueIdentifier, false)
    );
    assert_eq!(
        column_type(&student, "Discriminator"),
        (SqlType::NVarChar(Some(128)), true)
    );
    assert_eq!(
        column_type(&student, "LastModifiedDate"),
        (SqlType::DateTime2 { scale: 7 }, false)
    );
    let ssa = table("StudentSchoolAssociation");
    assert_eq!(
        column_type(&ssa, "FullTimeEquivalency"),
        (
            SqlType::Decimal {
                precision: 3,
                scale: 2
            },
            true
        )
    );
    assert_eq!(
        column_type(&ssa, "ClassOfSchoolYear"),
        (SqlType::SmallInt, true)
    );
    assert_eq!(column_type(&ssa, "ExitWithdrawDate"), (SqlType::Date, true));
    let d = table("Descriptor");
    assert_eq!(
        column_type(&d, "Namespace"),
        (SqlType::NVarChar(Some(255)), false)
    );
    assert_eq!(
        column_type(&d, "CodeValue"),
        (SqlType::NVarChar(Some(50)), false)
    );
    assert_eq!(
        column_type(&d, "ShortDescription"),
        (SqlType::NVarChar(Some(75)), false)
    );
    assert_eq!(
        column_type(&table("Course"), "MinimumAvailableCredits"),
        (
            SqlType::Decimal {
                precision: 9,
                scale: 3
            },
            true
        )
    );
    assert_eq!(
        column_type(&table("Section"), "SectionIdentifier"),
        (SqlType::NVarChar(Some(255)), false)
    );
    assert_eq!(
        column_type(&table("StaffSectionAssociation"), "PercentageContribution"),
        (
            SqlType::Decimal {
                precision: 5,
                scale: 4
            },
            true
        )
    );
    assert_eq!(
        column_type(&table("StudentAssessment"), "AdministrationDate"),
        (SqlType::DateTime2 { scale: 7 }, false)
    );
    assert_eq!(
        column_type(&table("StudentAssessmentItem"), "RawScoreResult"),
        (
            SqlType::Decimal {
                precision: 15,
                scale: 5
            },
            true
        )
    );
    assert_eq!(
        column_type(&table("StudentAssessmentScoreResult"), "Result"),
        (SqlType::NVarChar(Some(35)), false)
    );
    assert_eq!(
        column_type(&table("SchoolYearType"), "CurrentSchoolYear"),
        (SqlType::Bit, false)
    );
    // Descriptor subtype tables hold only their key; School only its own columns.
    assert_eq!(table("GradeLevelDescriptor").columns.len(), 1);
    assert!(table("School")
        .columns
        .iter()
        .all(|c| c.name != "CreateDate"));
    // Child (collection) tables carry CreateDate only.
    let race = table("StudentEducationOrganizationAssociationRace");
    let names: Vec<&str> = race.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "EducationOrganizationId",
            "RaceDescriptorId",
            "StudentUSI",
            "CreateDate"
        ]
    );
    // Every table with an Id has it as uniqueidentifier with both timestamps.
    for t in edfi::tables() {
        if t.columns.iter().any(|c| c.name == "Id") {
            assert_eq!(
                column_type(&t, "Id").0,
                SqlType::UniqueIdentifier,
                "{}",
                t.name
            );
            assert_eq!(
                column_type(&t, "CreateDate").0,
                SqlType::DateTime2 { scale: 7 },
                "{}",
                t.name
            );
            assert_eq!(
                column_type(&t, "LastModifiedDate").0,
                SqlType::DateTime2 { scale: 7 },
                "{}",
                t.name
            );
        }
    }
    assert_eq!(edfi::identity_column("Student"), Some("StudentUSI"));
    assert_eq!(edfi::identity_column("Staff"), Some("StaffUSI"));
    assert_eq!(edfi::identity_column("Descriptor"), Some("DescriptorId"));
    assert_eq!(edfi::identity_column("Course"), None);
}

#[test]
fn edfi_create_table_tsql_matches_the_ods_ddl() {
    let ddl = edfi::create_table_tsql(&table("StudentSchoolAssociation"));
    assert!(
        ddl.starts_with("CREATE TABLE [edfi].[StudentSchoolAssociation] (\n"),
        "{ddl}"
    );
    assert!(ddl.contains("    [EntryDate] date NOT NULL,\n"), "{ddl}");
    assert!(
        ddl.contains("    [FullTimeEquivalency] decimal(3,2) NULL,\n"),
        "{ddl}"
    );
    assert!(ddl.contains(
        "    [CreateDate] datetime2(7) NOT NULL CONSTRAINT [StudentSchoolAssociation_DF_CreateDate] DEFAULT (getdate()),\n"
    ), "{ddl}");
    assert!(ddl.contains(
        "    [Id] uniqueidentifier NOT NULL CONSTRAINT [StudentSchoolAssociation_DF_Id] DEFAULT (newid()),\n"
    ), "{ddl}");
    assert!(ddl.ends_with(
        "    CONSTRAINT [StudentSchoolAssociation_PK] PRIMARY KEY CLUSTERED ([EntryDate] ASC, [SchoolId] ASC, [StudentUSI] ASC)\n);\n"
    ), "{ddl}");
    let student = edfi::create_table_tsql(&table("Student"));
    assert!(
        student.contains("    [StudentUSI] int IDENTITY(1,1) NOT NULL,\n"),
        "{student}"
    );
    assert!(
        student.contains("    [FirstName] nvarchar(75) NOT NULL,\n"),
        "{student}"
    );
    // One statement per table; all 37 render.
    for t in edfi::tables() {
        let ddl = edfi::create_table_tsql(&t);
        assert_eq!(ddl.matches("CREATE TABLE").count(), 1);
        assert_eq!(ddl.lines().count(), t.columns.len() + 3, "{ddl}");
    }
}

//! The sample-data generator on plain tables: deterministic per seed, referentially consistent,
//! keeping the workload invariant.

mod edfi_support;

use edfi_support::{assert_consistent, table_hashes, Db};
use ods_sim::edfi::{self, SetupOptions};

fn opts(seed: u64, students: u64) -> SetupOptions {
    SetupOptions {
        students,
        seed,
        parallelism: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edfi_generation_is_deterministic_and_consistent() {
    let (a, b, c) = (Db::new("gen_a"), Db::new("gen_b"), Db::new("gen_c"));
    let ca = a.create_plain().await;
    let cb = b.create_plain().await;
    let cc = c.create_plain().await;
    let counts = edfi::load(&a.url(), &opts(7, 1_500)).await.unwrap();
    let counts_b = edfi::load(&b.url(), &opts(7, 1_500)).await.unwrap();
    edfi::load(&c.url(), &opts(8, 1_500)).await.unwrap();
    assert_eq!(counts, counts_b);
    assert_eq!(counts.len(), 37);
    assert!(
        counts.values().all(|n| *n > 0),
        "an empty table: {counts:?}"
    );
    assert_eq!(counts["Student"], 1_500);
    // Every student enrolled this year; those who came up from the year before (not transfers)
    // in the earlier years whose grade their school has too.
    let ssa = counts["StudentSchoolAssociation"];
    assert!((2_500..4_500).contains(&ssa), "{ssa} enrollments");
    assert_eq!(counts["School"], 3);
    assert_eq!(counts["EducationOrganization"], 4);
    assert_eq!(counts["GradeLevelDescriptor"], 15);
    assert_eq!(counts["StudentAssessment"], 3_000);
    assert_eq!(counts["StudentAssessmentItem"], 18_000);
    let per_enrollment = counts["StudentSectionAssociation"] as f64 / ssa as f64;
    assert!(
        (3.0..=4.0).contains(&per_enrollment),
        "{per_enrollment} section associations per enrollment"
    );
    let per_year: Vec<(i16, i64)> = ca
        .query(
            r#"SELECT "SchoolYear", count(*) FROM edfi."StudentSchoolAssociation" GROUP BY 1 ORDER BY 1"#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(per_year.len(), 3, "{per_year:?}");
    assert_eq!(per_year[2], (2025, 1_500));
    assert!(
        per_year[0].1 > 500 && per_year[1].1 > per_year[0].1,
        "{per_year:?}"
    );

    let ha = table_hashes(&ca, false).await;
    assert_eq!(
        ha,
        table_hashes(&cb, false).await,
        "same seed, different rows"
    );
    let hc = table_hashes(&cc, false).await;
    assert_ne!(ha["Student"], hc["Student"]);
    assert_ne!(ha["StudentAssessmentItem"], hc["StudentAssessmentItem"]);
    assert_eq!(ha["Descriptor"].len(), 32);
    assert_eq!(edfi::count_rows(&ca).await.unwrap(), counts);

    assert_consistent(&ca).await;
    assert_consistent(&cc).await;

    // Names outside ASCII survive the COPY.
    let non_ascii: i64 = ca
        .query_one(
            r#"SELECT count(*) FROM edfi."Student" WHERE "FirstName" ~ '[^[:ascii:]]' OR "LastSurname" ~ '[^[:ascii:]]'"#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(non_ascii > 100, "{non_ascii} students with non-ASCII names");
    let nguyen: i64 = ca
        .query_one(
            r#"SELECT count(*) FROM edfi."Student" WHERE "LastSurname" = 'Nguyễn'"#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(nguyen > 0);
    // Grade levels as the IC pipeline maps them (Kindergarten … Twelfth grade).
    let grades: Vec<String> = ca
        .query(
            r#"SELECT d."CodeValue" FROM edfi."GradeLevelDescriptor" g
               JOIN edfi."Descriptor" d ON d."DescriptorId" = g."GradeLevelDescriptorId"
               WHERE d."Namespace" = 'uri://ed-fi.org/GradeLevelDescriptor' ORDER BY g."GradeLevelDescriptorId""#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(grades[0], "Kindergarten");
    assert_eq!(grades[12], "Twelfth grade");
    // Every assessment result the Illuminate pipeline reads is in its namespace.
    let other: i64 = ca
        .query_one(
            r#"SELECT count(*) FROM edfi."StudentAssessment" WHERE "Namespace" <> 'uri://illuminateed.com'"#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 0);
}

//! The seed's Tableau workbooks as a contract: every reporting table and column their custom SQL
//! queries (listed as data in `tests/fixtures/workbook_columns.toml`) exists in the tables the
//! shipped models create, with a type the queries can use; what is not produced is listed there
//! with its reason, and is checked to be absent, so the list cannot go stale.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use edfi_cdc::models::Models;
use serde::Deserialize;
use support::*;

#[derive(Deserialize)]
struct Contract {
    tables: BTreeMap<String, BTreeMap<String, String>>,
    not_produced: Vec<NotProduced>,
}

#[derive(Deserialize)]
struct NotProduced {
    table: String,
    columns: Vec<String>,
    reason: String,
}

/// The models of every group of the shipped connector file.
fn shipped_models() -> Models {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Values for what the file requires; nothing connects.
    let env = |k: &str| match k {
        "ODS_HOST" | "ODS_DATABASE" | "ODS_USER" | "ODS_PASSWORD" => Some("unused".to_string()),
        "STAGING_DATABASE_URL" => Some("postgres://unused/unused".to_string()),
        _ => None,
    };
    let configs = edfi_cdc::config::load(&[root.join("connectors/edfi-ods.toml")], &env)
        .unwrap_or_else(|e| panic!("connector file: {e}"));
    Models::load_for_connector(&shipped_models_dir(), &configs[0]).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether a column of PostgreSQL type `data_type` serves the queries' use `kind`.
fn serves(kind: &str, data_type: &str) -> bool {
    let integer = ["smallint", "integer", "bigint"].contains(&data_type);
    match kind {
        "text" => ["character varying", "character", "text"].contains(&data_type),
        "integer" => integer,
        "number" => integer || ["numeric", "double precision", "real"].contains(&data_type),
        "boolean" | "date" => data_type == kind,
        other => panic!("the contract names an unknown kind {other:?}"),
    }
}

#[tokio::test]
async fn every_column_the_workbooks_query_exists_with_a_type_they_can_use() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workbook_columns.toml"),
    )
    .unwrap();
    let contract: Contract = toml::from_str(&text).unwrap();
    let db = TestDb::create("workbooks").await;
    let client = connect(&db.url()).await;
    shipped_models().install(&client).await.unwrap();

    let types: HashMap<(String, String), String> = client
        .query(
            "SELECT table_schema || '.' || table_name, column_name, data_type \
             FROM information_schema.columns \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();

    let mut problems = Vec::new();
    for (table, columns) in &contract.tables {
        for (column, kind) in columns {
            match types.get(&(table.clone(), column.clone())) {
                None => problems.push(format!("{table}.{column}: missing")),
                Some(t) if !serves(kind, t) => problems.push(format!(
                    "{table}.{column}: {t}, the workbooks use it as {kind}"
                )),
                Some(_) => {}
            }
        }
    }
    for n in &contract.not_produced {
        assert!(!n.reason.is_empty(), "{}: no reason given", n.table);
        for column in &n.columns {
            if types.contains_key(&(n.table.clone(), column.clone())) {
                problems.push(format!(
                    "{}.{column} is listed as not produced but exists: move it to [tables]",
                    n.table
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

//! `models check`: each model's declared table against the target's, and its `SELECT`'s
//! result columns against the declared ones, without changing anything.

use super::*;

pub(super) type TargetColumn = (String, Result<ColumnType, String>, bool);

impl Model {
    /// Compare the declared table with the target table (if it exists) and the `SELECT`'s
    /// result columns with the declared ones; tables in `stand_ins` (upstream models whose
    /// tables do not exist yet, custom inputs not in the target) are described from their
    /// declarations. Reads only. Each problem names model and column.
    async fn check_with(
        &self,
        client: &impl GenericClient,
        stand_ins: &[(&str, &[Column])],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let (schema, table) = self.name.split_once('.').unwrap_or(("", &self.name));
        match target_columns(client, schema, table).await {
            Err(e) => problems.push(format!(
                "model {}: read the target's columns: {}",
                self.name,
                pg_message(&e)
            )),
            Ok(actual) if actual.is_empty() => {}
            Ok(actual) => {
                for c in &self.columns {
                    match actual.iter().find(|a| a.0 == c.name) {
                        None => problems.push(format!(
                            "model {}: column {}: missing in the target table",
                            self.name, c.name
                        )),
                        Some((_, ty, not_null)) => {
                            match ty {
                                Ok(t) if *t == c.ty => {}
                                Ok(t) => problems.push(format!(
                                    "model {}: column {}: target type {t}, model declares {}",
                                    self.name, c.name, c.ty
                                )),
                                Err(raw) => problems.push(format!(
                                    "model {}: column {}: target type {raw}, model declares {}",
                                    self.name, c.name, c.ty
                                )),
                            }
                            if *not_null != c.not_null {
                                problems.push(format!(
                                    "model {}: column {}: target is {}, model declares {}",
                                    self.name,
                                    c.name,
                                    null_word(*not_null),
                                    null_word(c.not_null)
                                ));
                            }
                        }
                    }
                }
                for (name, _, _) in &actual {
                    if !self.columns.iter().any(|c| &c.name == name) {
                        problems.push(format!(
                            "model {}: column {name}: in the target table but not in the model",
                            self.name
                        ));
                    }
                }
                let declared: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
                let order: Vec<&str> = actual.iter().map(|a| a.0.as_str()).collect();
                if problems.is_empty() && declared != order {
                    problems.push(format!(
                        "model {}: column order: target has ({}), model declares ({})",
                        self.name,
                        order.join(", "),
                        declared.join(", ")
                    ));
                }
                match target_key(client, schema, table).await {
                    Ok(key) if key == self.key => {}
                    Ok(key) => problems.push(format!(
                        "model {}: primary key: target has ({}), model declares ({})",
                        self.name,
                        key.join(", "),
                        self.key.join(", ")
                    )),
                    Err(e) => problems.push(format!(
                        "model {}: read the target's primary key: {}",
                        self.name,
                        pg_message(&e)
                    )),
                }
            }
        }
        match client.prepare(&self.select_with_stand_ins(stand_ins)).await {
            Err(e) => problems.push(format!(
                "model {}: the SELECT does not run: {}",
                self.name,
                pg_message(&e)
            )),
            Ok(stmt) => {
                let got = stmt.columns();
                if got.len() != self.columns.len() {
                    problems.push(format!(
                        "model {}: the SELECT returns {} columns, the table has {}",
                        self.name,
                        got.len(),
                        self.columns.len()
                    ));
                }
                for (c, g) in self.columns.iter().zip(got) {
                    if g.name() != c.name {
                        problems.push(format!(
                            "model {}: column {}: the SELECT's column in its place is named {}",
                            self.name,
                            c.name,
                            g.name()
                        ));
                    }
                    if !c.ty.accepts(g.type_()) {
                        problems.push(format!(
                            "model {}: column {}: the SELECT yields {}, the table declares {} (CAST it)",
                            self.name,
                            c.name,
                            g.type_().name(),
                            c.ty
                        ));
                    }
                }
            }
        }
        problems
    }
}

fn null_word(not_null: bool) -> &'static str {
    if not_null {
        "NOT NULL"
    } else {
        "nullable"
    }
}

impl Models {
    /// `models check`: compare each model's `CREATE TABLE` with the target table if it exists
    /// (columns, types, nullability, key) and the `SELECT`'s result columns with the declared
    /// ones — without changing anything. Each problem names model and column.
    pub async fn check(&self, client: &impl GenericClient) -> Vec<String> {
        let mut problems = Vec::new();
        for m in &self.models {
            problems.extend(self.check_model(m, client).await);
        }
        problems
    }

    /// [`Models::check`] for one of these models.
    pub async fn check_model(&self, m: &Model, client: &impl GenericClient) -> Vec<String> {
        let mut stand_ins: Vec<(&str, &[Column])> = Vec::new();
        for u in &m.upstream {
            let Some(up) = self.models.iter().find(|x| &x.name == u) else {
                continue;
            };
            if !table_exists(client, &up.name).await.unwrap_or(true) {
                stand_ins.push((&up.name, &up.columns));
            }
        }
        for c in &m.custom {
            if !table_exists(client, &c.name).await.unwrap_or(true) {
                stand_ins.push((&c.name, &c.columns));
            }
        }
        m.check_with(client, &stand_ins).await
    }
}

/// Whether the target's table `schema.table` has the column `column`.
pub async fn has_column(
    client: &impl GenericClient,
    name: &str,
    column: &str,
) -> Result<bool, tokio_postgres::Error> {
    let (schema, table) = name.split_once('.').unwrap_or(("", name));
    Ok(client
        .query_opt(
            "SELECT 1 FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
            &[&schema, &table, &column],
        )
        .await?
        .is_some())
}

/// Whether the target has the table `schema.table`.
pub async fn table_exists(
    client: &impl GenericClient,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    let (schema, table) = name.split_once('.').unwrap_or(("", name));
    Ok(!target_columns(client, schema, table).await?.is_empty())
}

pub(super) async fn target_columns(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<TargetColumn>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT CAST(column_name AS varchar(128)), CAST(data_type AS varchar(128)), \
             CAST(character_maximum_length AS integer), CAST(numeric_precision AS integer), \
             CAST(numeric_scale AS integer), CAST(is_nullable AS varchar(3)) \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 \
             ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let data_type: String = r.get(1);
            let ty = ColumnType::from_information_schema(&data_type, r.get(2), r.get(3), r.get(4))
                .ok_or(data_type);
            (r.get(0), ty, r.get::<_, String>(5) == "NO")
        })
        .collect())
}

async fn target_key(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT CAST(k.column_name AS varchar(128)) FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k ON k.constraint_schema = c.constraint_schema \
             AND k.constraint_name = c.constraint_name AND k.table_name = c.table_name \
             WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = $1 AND c.table_name = $2 \
             ORDER BY k.ordinal_position",
            &[&schema, &table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

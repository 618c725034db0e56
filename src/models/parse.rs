//! Loading the model files: headers, the `CREATE TABLE`, the `SELECT`'s references, and the
//! checks that run before anything connects.

use super::*;

pub(super) fn load_groups(
    dir: &Path,
    groups: &[(&str, &HashSet<String>)],
) -> Result<Models, ModelError> {
    let mut problems = Vec::new();
    let mut parsed: Vec<Model> = Vec::new();
    for (group, _) in groups {
        let gdir = dir.join(group);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&gdir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(ModelProblem {
                    file: gdir.clone(),
                    reason: format!("cannot read the directory: {e}"),
                });
                continue;
            }
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect(),
        };
        files.sort();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(ModelProblem {
                        file,
                        reason: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            match parse_model(group, &file, &text) {
                Ok(m) => parsed.push(m),
                Err(reasons) => problems.extend(reasons.into_iter().map(|reason| ModelProblem {
                    file: file.clone(),
                    reason,
                })),
            }
        }
    }
    // References: every `edfi.table`, and every other model's name, found in the SELECT.
    let names: BTreeMap<String, PathBuf> = {
        let mut names = BTreeMap::new();
        for m in &parsed {
            if let Some(first) = names.insert(m.name.clone(), m.file.clone()) {
                problems.push(ModelProblem {
                    file: m.file.clone(),
                    reason: format!("model {} is also defined by {}", m.name, first.display()),
                });
            }
        }
        names
    };
    for m in &mut parsed {
        let configured = groups
            .iter()
            .find(|(g, _)| *g == m.group)
            .map(|(_, c)| *c)
            .expect("a parsed model's group was loaded");
        let declared = std::mem::take(&mut m.inputs);
        let refs = references(&mask(&m.select).to_ascii_lowercase());
        let mut found_inputs = BTreeSet::new();
        let mut found_models = BTreeSet::new();
        let mut found_custom = BTreeSet::new();
        for r in refs {
            if r.starts_with(&format!("{INPUT_SCHEMA}.")) {
                found_inputs.insert(r);
            } else if r.starts_with(&format!("{CUSTOM_SCHEMA}.")) {
                found_custom.insert(r);
            } else if names.contains_key(&r) && r != m.name {
                found_models.insert(r);
            }
        }
        let declared_custom: BTreeSet<String> = m.custom.iter().map(|c| c.name.clone()).collect();
        for r in found_custom.difference(&declared_custom) {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: reads {r} without a `-- custom: {r} (column type, …)` line naming the columns it reads",
                    m.name
                ),
            });
        }
        for r in declared_custom.difference(&found_custom) {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: `-- custom: {r}` is declared but not read",
                    m.name
                ),
            });
        }
        let declared_set: BTreeSet<String> = declared.iter().cloned().collect();
        let derived: BTreeSet<String> = found_inputs.union(&found_models).cloned().collect();
        let undeclared: Vec<&String> = derived.difference(&declared_set).collect();
        let unused: Vec<&String> = declared_set.difference(&derived).collect();
        if !undeclared.is_empty() || !unused.is_empty() {
            let mut reason = format!("model {}: `-- inputs:` does not match the SELECT:", m.name);
            if !undeclared.is_empty() {
                reason.push_str(&format!(
                    " read but not declared: {};",
                    join(undeclared.iter().map(|s| s.as_str()))
                ));
            }
            if !unused.is_empty() {
                reason.push_str(&format!(
                    " declared but not read: {};",
                    join(unused.iter().map(|s| s.as_str()))
                ));
            }
            reason.pop();
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason,
            });
        }
        let missing: Vec<&String> = found_inputs
            .iter()
            .filter(|i| !configured.contains(*i))
            .collect();
        if !missing.is_empty() {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: input(s) {} are not replicated tables of group {}: add them to the \
                     group's `tables` in the connector file",
                    m.name,
                    join(missing.iter().map(|s| s.as_str())),
                    m.group
                ),
            });
        }
        for (table, sql) in &m.students_of {
            let read = references(&mask(sql).to_ascii_lowercase());
            let unknown: Vec<&String> = read
                .iter()
                .filter(|r| r.starts_with(&format!("{INPUT_SCHEMA}.")) && !configured.contains(*r))
                .collect();
            let reason = if m.incremental.is_none() {
                Some(
                    "only an incremental model (`-- incremental:`) maps changes to students"
                        .to_string(),
                )
            } else if !unknown.is_empty() {
                Some(format!(
                    "reads {}, not replicated tables of group {}",
                    join(unknown.iter().map(|s| s.as_str())),
                    m.group
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                problems.push(ModelProblem {
                    file: m.file.clone(),
                    reason: format!("model {}: `-- students_of: {table}`: {reason}", m.name),
                });
            }
        }
        if let Some(by) = &m.refresh_by {
            let unread: Vec<&String> = by
                .inputs
                .iter()
                .filter(|t| !found_inputs.contains(*t))
                .collect();
            if !unread.is_empty() {
                problems.push(ModelProblem {
                    file: m.file.clone(),
                    reason: format!(
                        "model {}: `-- refresh_by:` lists {}, not input(s) of the model",
                        m.name,
                        join(unread.iter().map(|s| s.as_str()))
                    ),
                });
            }
        }
        let years = format!("{INPUT_SCHEMA}.schoolyeartype");
        if m.history.is_some() && !configured.contains(&years) {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: `-- history:` reads the current school year from {years}, which is \
                     not a replicated table of group {}: add SchoolYearType to the group's `tables` \
                     in the connector file",
                    m.name, m.group
                ),
            });
        }
        m.inputs = found_inputs.into_iter().collect();
        m.upstream = found_models.into_iter().collect();
    }
    let models = match order(parsed) {
        Ok(models) => models,
        Err(cycle) => {
            problems.extend(cycle);
            Vec::new()
        }
    };
    // A `-- students_of:` table is an input of the model or of a model it reads (whose
    // refresh for that table's changes the model follows), or a model it reads (whose changed
    // rows it maps).
    for m in &models {
        for (table, _) in &m.students_of {
            let read = m.inputs.contains(table)
                || m.upstream.contains(table)
                || models
                    .iter()
                    .any(|u| m.upstream.contains(&u.name) && u.inputs.contains(table));
            if !read {
                problems.push(ModelProblem {
                    file: m.file.clone(),
                    reason: format!(
                        "model {}: `-- students_of: {table}`: {table} is not an input of the \
                         model, a model it reads or an input of one",
                        m.name
                    ),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(Models {
            models,
            postgres: false,
            checked: Arc::default(),
            live: false,
            student_tables: HashSet::new(),
        })
    } else {
        Err(ModelError(problems))
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Dependency order: a model after every model it reads; ties by name. A cycle is a problem of
/// each file on it.
fn order(mut pending: Vec<Model>) -> Result<Vec<Model>, Vec<ModelProblem>> {
    pending.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<Model> = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|m| m.upstream.iter().all(|u| out.iter().any(|o| &o.name == u)));
        match ready {
            Some(i) => out.push(pending.remove(i)),
            None => {
                return Err(pending
                    .iter()
                    .map(|m| ModelProblem {
                        file: m.file.clone(),
                        reason: format!(
                            "model {} is on a dependency cycle (reads {})",
                            m.name,
                            m.upstream.join(", ")
                        ),
                    })
                    .collect())
            }
        }
    }
    Ok(out)
}

/// Parse one model file. `inputs` holds the declared inputs until they are checked.
fn parse_model(group: &str, file: &Path, text: &str) -> Result<Model, Vec<String>> {
    let mut problems = Vec::new();
    let mut name: Option<String> = None;
    let mut declared: Vec<String> = Vec::new();
    let mut saw_inputs = false;
    let mut incremental: Option<String> = None;
    let mut history: Option<String> = None;
    let mut students_of: Vec<(String, String)> = Vec::new();
    let mut refresh_by: Option<RefreshBy> = None;
    let mut index: Vec<String> = Vec::new();
    let mut on_overflow = OnOverflow::default();
    let mut custom: Vec<CustomInput> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        match key.trim() {
            "model" => name = Some(value.trim().to_ascii_lowercase()),
            "incremental" => incremental = Some(value.trim().to_ascii_lowercase()),
            "history" => history = Some(value.trim().to_ascii_lowercase()),
            "index" => index.extend(
                value
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty()),
            ),
            "students_of" => match value.split_once(':') {
                Some((table, sql)) if sql.contains("{changed}") => {
                    students_of.push((table.trim().to_ascii_lowercase(), sql.trim().to_string()))
                }
                _ => problems.push(format!(
                    "`-- students_of:{value}`: write `-- students_of: edfi.table: SELECT studentusi \
                     … {{changed}} …`, where {{changed}} is the flush's rows of the table"
                )),
            },
            "refresh_by" => match RefreshBy::parse(value) {
                Ok(by) => refresh_by = Some(by),
                Err(e) => problems.push(e),
            },
            "on_overflow" => match value.trim().to_ascii_lowercase().as_str() {
                "truncate" => on_overflow = OnOverflow::Truncate,
                "fail" => on_overflow = OnOverflow::Fail,
                other => problems.push(format!(
                    "`-- on_overflow: {other}`: write `truncate` or `fail`"
                )),
            },
            "custom" => match parse_custom(value) {
                Ok(c) => custom.push(c),
                Err(e) => problems.push(e),
            },
            "inputs" => {
                saw_inputs = true;
                declared.extend(
                    value
                        .split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty()),
                );
            }
            _ => {}
        }
    }
    if name.is_none() {
        problems.push("missing the `-- model: schema.table` header line".to_string());
    }
    if !saw_inputs {
        problems.push("missing the `-- inputs: edfi.table, …` header line".to_string());
    }
    let clean = strip_comments(text);
    let masked = mask(&clean);
    let lower = masked.to_ascii_lowercase();
    let tokens = tokens(&lower);
    for (construct, hint) in NOT_PORTABLE {
        let pattern: Vec<&str> = construct.split(' ').collect();
        if tokens
            .windows(pattern.len())
            .any(|w| w == pattern.as_slice())
        {
            problems.push(format!(
                "`{}` is not valid on both PostgreSQL and Redshift: {hint}",
                construct.replace(' ', "")
            ));
        }
    }
    let mut statements = Vec::new();
    let mut start = 0;
    for (i, ch) in masked.char_indices() {
        if ch == ';' {
            statements.push(clean[start..i].trim());
            start = i + 1;
        }
    }
    statements.push(clean[start..].trim());
    statements.retain(|s| !s.is_empty());
    if statements.len() != 2 {
        problems.push(format!(
            "expected two statements, `CREATE TABLE …;` then `SELECT …;`, found {}",
            statements.len()
        ));
        return Err(problems);
    }
    let table = match parse_create_table(statements[0]) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let select = statements[1].to_string();
    let first_word = select
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if first_word != "select" && first_word != "with" {
        problems.push("the second statement must be a SELECT (or WITH … SELECT)".to_string());
    }
    if let (Some(n), Some((t, _, _))) = (&name, &table) {
        if n != t {
            problems.push(format!(
                "the header names model {n} but the CREATE TABLE creates {t}"
            ));
        }
    }
    if let Some(n) = &name {
        if n.split('.').count() != 2 || n.starts_with(&format!("{INPUT_SCHEMA}.")) {
            problems.push(format!(
                "model name {n} must be schema.table in a reporting schema (not {INPUT_SCHEMA})"
            ));
        }
    }
    if let (Some(col), Some((_, columns, _))) = (&incremental, &table) {
        if !columns.iter().any(|c| &c.name == col) {
            problems.push(format!(
                "`-- incremental: {col}` names no column of the table"
            ));
        }
    }
    if let (Some(by), Some((_, columns, _))) = (&refresh_by, &table) {
        if incremental.is_some() {
            problems.push(
                "`-- refresh_by:` and `-- incremental:` exclude each other: a model is refreshed \
                 by student or by another key"
                    .to_string(),
            );
        }
        if !columns.iter().any(|c| c.name == by.column) {
            problems.push(format!(
                "`-- refresh_by: {} = …` names no column of the table",
                by.column
            ));
        }
    }
    if let Some((_, columns, _)) = &table {
        for col in index
            .iter()
            .filter(|i| !columns.iter().any(|c| &c.name == *i))
        {
            problems.push(format!("`-- index: {col}` names no column of the table"));
        }
    }
    if let (Some(col), Some((_, columns, _))) = (&history, &table) {
        match columns.iter().find(|c| &c.name == col) {
            None => problems.push(format!("`-- history: {col}` names no column of the table")),
            Some(c)
                if !matches!(
                    c.ty,
                    ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt
                ) =>
            {
                problems.push(format!(
                    "`-- history: {col}`: the column is {}, not the school year as a number \
                     (smallint, integer or bigint)",
                    c.ty
                ))
            }
            Some(_) => {}
        }
    }
    match (problems.is_empty(), name, table) {
        (true, Some(name), Some((_, columns, key))) => Ok(Model {
            definition: definition_digest(&name, &columns, &key, &select, history.as_deref()),
            name,
            group: group.to_string(),
            file: file.to_path_buf(),
            inputs: declared,
            upstream: Vec::new(),
            custom,
            columns,
            key,
            select,
            incremental,
            on_overflow,
            history,
            students_of,
            refresh_by,
            index,
        }),
        _ => Err(problems),
    }
}

/// [`Model::definition`].
fn definition_digest(
    name: &str,
    columns: &[Column],
    key: &[String],
    select: &str,
    history: Option<&str>,
) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {} {}", c.name, c.ty, c.not_null))
        .collect();
    // Layout is not definition: whitespace and line endings do not count.
    let select = select.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = format!(
        "{name}\n{}\n{}\n{select}\n{}",
        cols.join(","),
        key.join(","),
        history.unwrap_or("")
    );
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// `custom.table (column type, …)` of a `-- custom:` header line.
fn parse_custom(value: &str) -> Result<CustomInput, String> {
    let value = value.trim();
    let bad = || {
        format!("cannot read `-- custom: {value}`: write `-- custom: {CUSTOM_SCHEMA}.table (column type, …)`")
    };
    let open = value.find('(').ok_or_else(bad)?;
    let close = value
        .rfind(')')
        .filter(|&c| c > open && value[c + 1..].trim().is_empty())
        .ok_or_else(bad)?;
    let name = value[..open].trim().to_ascii_lowercase();
    if !matches!(name.split_once('.'), Some((s, t)) if s == CUSTOM_SCHEMA && is_ident(t)) {
        return Err(format!(
            "custom input `{name}` must be a table of schema {CUSTOM_SCHEMA}"
        ));
    }
    let mut columns: Vec<Column> = Vec::new();
    for item in split_top_level(&value[open + 1..close]) {
        let lower = item.trim().to_ascii_lowercase();
        let (col, ty) = lower.split_once(char::is_whitespace).ok_or_else(bad)?;
        if !is_ident(col) || columns.iter().any(|c| c.name == col) {
            return Err(format!(
                "custom input {name}: column `{col}` is not a new lower-case identifier"
            ));
        }
        let ty = ColumnType::parse(ty.trim())
            .map_err(|e| format!("custom input {name}: column {col}: {e}"))?;
        columns.push(Column {
            name: col.to_string(),
            ty,
            not_null: false,
        });
    }
    if columns.is_empty() {
        return Err(bad());
    }
    Ok(CustomInput { name, columns })
}

/// Constructs one of the two databases lacks, with what to write instead.
/// Patterns are token sequences separated by single spaces (see [`tokens`]).
const NOT_PORTABLE: [(&str, &str); 6] = [
    (": :", "write CAST(x AS type)"),
    ("distinct on", "use ROW_NUMBER() OVER (PARTITION BY …) = 1"),
    ("filter (", "use an aggregate over CASE WHEN … END"),
    ("lateral", "join a derived table"),
    ("generate_series", "join a table of numbers or dates"),
    ("ilike", "compare LOWER(x) with LIKE"),
];

/// `CREATE TABLE schema.table (col type [NOT NULL], …, PRIMARY KEY (a, b))`.
fn parse_create_table(stmt: &str) -> Result<(String, Vec<Column>, Vec<String>), String> {
    let lower = stmt.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().take(2).collect();
    if words != ["create", "table"] {
        return Err("the first statement must be `CREATE TABLE schema.table (…)`".into());
    }
    let open = stmt.find('(').ok_or("CREATE TABLE without a column list")?;
    let close = stmt
        .rfind(')')
        .filter(|c| *c > open)
        .ok_or("CREATE TABLE without a closing `)`")?;
    if !stmt[close + 1..].trim().is_empty() {
        return Err(format!(
            "unexpected text after the CREATE TABLE column list: `{}` (table options differ between PostgreSQL and Redshift)",
            stmt[close + 1..].trim()
        ));
    }
    let head = lower[..open].split_whitespace().collect::<Vec<_>>();
    let table = match head.as_slice() {
        ["create", "table", name] => name.to_string(),
        _ => return Err("write `CREATE TABLE schema.table (` on the first line".into()),
    };
    let mut columns: Vec<Column> = Vec::new();
    let mut key: Option<Vec<String>> = None;
    let mut problems = Vec::new();
    for item in split_top_level(&stmt[open + 1..close]) {
        let item = item.trim();
        let lower = item.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("primary key") {
            let cols = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .map(|r| {
                    r.split(',')
                        .map(|c| c.trim().to_string())
                        .collect::<Vec<_>>()
                });
            match cols {
                Some(c) if c.iter().all(|c| is_ident(c)) => key = Some(c),
                _ => problems.push(format!("cannot read `{item}`: write PRIMARY KEY (a, b)")),
            }
            continue;
        }
        let Some((name, rest)) = lower.split_once(char::is_whitespace) else {
            problems.push(format!(
                "cannot read column `{item}`: write `name type [NOT NULL]`"
            ));
            continue;
        };
        if !is_ident(name) {
            problems.push(format!(
                "column name `{name}` must be a lower-case identifier (letters, digits, _)"
            ));
            continue;
        }
        let rest = rest.trim();
        let (ty, not_null) = if let Some(t) = rest.strip_suffix("not null") {
            (t.trim(), true)
        } else if let Some(t) = rest.strip_suffix(" null") {
            (t.trim(), false)
        } else {
            (rest, false)
        };
        if ty.contains("primary key") || ty.contains("default") || ty.contains("references") {
            problems.push(format!(
                "column {name}: only `name type [NOT NULL]` is allowed; declare the key as a PRIMARY KEY (…) line"
            ));
            continue;
        }
        match ColumnType::parse(ty) {
            Ok(ty) => {
                if columns.iter().any(|c| c.name == name) {
                    problems.push(format!("column {name} is declared twice"));
                }
                columns.push(Column {
                    name: name.to_string(),
                    ty,
                    not_null,
                });
            }
            Err(e) => problems.push(format!("column {name}: {e}")),
        }
    }
    let key = key.unwrap_or_default();
    if key.is_empty() {
        problems.push(format!("table {table} has no PRIMARY KEY (…) line"));
    }
    for k in &key {
        match columns.iter().find(|c| &c.name == k) {
            None => problems.push(format!("primary key column {k} is not a column of {table}")),
            Some(c) if !c.not_null => {
                problems.push(format!("primary key column {k} must be declared NOT NULL"))
            }
            Some(_) => {}
        }
    }
    if columns.is_empty() {
        problems.push(format!("table {table} has no columns"));
    }
    if problems.is_empty() {
        Ok((table, columns, key))
    } else {
        Err(problems.join("; "))
    }
}

pub(super) fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Split at commas outside parentheses.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, ch) in body.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&body[start..]);
    out.retain(|s| !s.trim().is_empty());
    out
}

/// The text with `-- …` comments replaced by spaces (string literals kept), same byte offsets.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut in_comment = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
                out.push(c);
            } else {
                out.extend(std::iter::repeat_n(' ', c.len_utf8()));
            }
            continue;
        }
        if !in_string && c == '-' && chars.peek() == Some(&'-') {
            in_comment = true;
            out.push(' ');
            continue;
        }
        if c == '\'' {
            in_string = !in_string;
        }
        out.push(c);
    }
    out
}

/// The text (already without comments) with the contents of string literals replaced by
/// spaces, same byte offsets: what is left is SQL structure only.
pub(super) fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    for c in text.chars() {
        if c == '\'' {
            in_string = !in_string;
            out.push(c);
        } else if in_string {
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

/// Words (identifiers, keywords, numbers) and single punctuation characters of masked SQL.
fn tokens(masked: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut word: Option<usize> = None;
    for (i, c) in masked.char_indices() {
        let in_word = c.is_ascii_alphanumeric() || c == '_';
        match (in_word, word) {
            (true, None) => word = Some(i),
            (false, Some(start)) => {
                out.push(&masked[start..i]);
                word = None;
            }
            _ => {}
        }
        if !in_word && !c.is_whitespace() {
            out.push(&masked[i..i + c.len_utf8()]);
        }
    }
    if let Some(start) = word {
        out.push(&masked[start..]);
    }
    out
}

/// Every `name.name` in masked, lower-cased SQL whose first part starts with a letter or `_`
/// (qualified table names, and alias-qualified columns, which callers filter out).
pub(super) fn references(masked: &str) -> BTreeSet<String> {
    qualified_names(masked)
        .into_iter()
        .map(|(start, end)| masked[start..end].to_string())
        .collect()
}

/// Byte ranges of the `name.name` tokens of masked SQL (see [`references`]).
/// `sql` with the schema of every `from.table` reference made `to` (comments and string
/// literals left alone).
pub(super) fn in_schema(sql: &str, from: &str, to: &str) -> String {
    let masked = mask(sql).to_ascii_lowercase();
    let mut out = String::new();
    let mut last = 0;
    for (start, end) in qualified_names(&masked) {
        if masked[start..end].split_once('.').map(|(s, _)| s) == Some(from) {
            out.push_str(&sql[last..start]);
            out.push_str(to);
            last = start + from.len();
        }
    }
    out.push_str(&sql[last..]);
    out
}

pub(super) fn qualified_names(masked: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = masked.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b'.') {
            i += 1;
        }
        let token = &masked[start..i];
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() == 2
            && !parts[0].is_empty()
            && !parts[1].is_empty()
            && parts[0].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            out.push((start, i));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn write(dir: &Path, group: &str, file: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join(group)).unwrap();
        let p = dir.join(group).join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("edfi-cdc-models-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        d
    }

    const GOOD: &str = "-- model: roster.thing
-- inputs: edfi.student,
-- inputs: edfi.school
CREATE TABLE roster.thing (
    studentnumber varchar(32) NOT NULL,
    amount decimal(9, 3),
    schoolid integer NOT NULL, -- a comment; with a semicolon
    PRIMARY KEY (studentnumber, schoolid)
);
SELECT CAST(s.studentuniqueid AS varchar(32)) AS studentnumber,
       CAST(NULL AS decimal(9,3)) AS amount,
       sc.schoolid AS schoolid -- edfi.not_a_reference
FROM edfi.student s CROSS JOIN edfi.school sc WHERE s.firstname <> 'edfi.x; --'
";

    #[test]
    fn parses_a_model_and_derives_its_inputs() {
        let dir = tempdir("good");
        write(&dir, "ic", "thing.sql", GOOD);
        let models = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"])).unwrap();
        let m = &models.models()[0];
        assert_eq!(m.name, "roster.thing");
        assert_eq!(m.inputs, ["edfi.school", "edfi.student"]);
        assert_eq!(m.key, ["studentnumber", "schoolid"]);
        assert_eq!(m.columns[1].ty, ColumnType::Decimal(9, 3));
        assert!(!m.columns[1].not_null);
        assert!(m.select.starts_with("SELECT"), "{}", m.select);
        assert!(!m.select.contains("not_a_reference"));
        assert!(models.inputs().contains("edfi.student"));
        assert!(m.create_table_sql().contains("\"amount\" decimal(9,3),"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn inputs_that_differ_from_the_select_are_an_error_naming_the_file() {
        let dir = tempdir("mismatch");
        let text = GOOD.replace("-- inputs: edfi.school", "-- inputs: edfi.calendar");
        let file = write(&dir, "ic", "thing.sql", &text);
        let all = set(&["edfi.student", "edfi.school", "edfi.calendar"]);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("read but not declared: edfi.school"), "{msg}");
        assert!(
            msg.contains("declared but not read: edfi.calendar"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn custom_inputs_are_declared_with_their_columns_and_stand_in_when_absent() {
        let dir = tempdir("custom");
        let text = GOOD
            .replace(
                "-- inputs: edfi.school\n",
                "-- inputs: edfi.school\n-- custom: custom.extra (studentnumber varchar(32), amount decimal(9, 3))\n",
            )
            .replace(
                "CAST(NULL AS decimal(9,3)) AS amount",
                "x.amount AS amount",
            )
            .replace(
                "CROSS JOIN edfi.school sc",
                "CROSS JOIN edfi.school sc LEFT JOIN custom.extra x ON x.studentnumber = s.studentuniqueid",
            );
        write(&dir, "ic", "thing.sql", &text);
        let all = set(&["edfi.student", "edfi.school"]);
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        let m = &models.models()[0];
        assert_eq!(m.custom.len(), 1);
        assert_eq!(m.custom[0].name, "custom.extra");
        assert_eq!(m.custom[0].columns[1].ty.to_string(), "decimal(9,3)");
        assert_eq!(
            m.inputs,
            ["edfi.school", "edfi.student"],
            "custom inputs are not replicated ones"
        );
        let c = &m.custom[0];
        let sql = m.select_with_stand_ins(&[(&c.name, &c.columns)]);
        assert!(
            sql.starts_with(
                "WITH \"custom__extra\" AS (SELECT CAST(NULL AS varchar(32)) AS \"studentnumber\""
            ),
            "{sql}"
        );
        assert!(sql.contains("LEFT JOIN \"custom__extra\" x"), "{sql}");

        let undeclared = text.replace(
            "-- custom: custom.extra (studentnumber varchar(32), amount decimal(9, 3))\n",
            "",
        );
        write(&dir, "ic", "thing.sql", &undeclared);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(
            err.contains(
                "reads custom.extra without a `-- custom: custom.extra (column type, …)` line"
            ),
            "{err}"
        );
        let unread = GOOD.replace(
            "-- inputs: edfi.school\n",
            "-- inputs: edfi.school\n-- custom: custom.extra (a integer)\n",
        );
        write(&dir, "ic", "thing.sql", &unread);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(
            err.contains("`-- custom: custom.extra` is declared but not read"),
            "{err}"
        );
        let elsewhere = GOOD.replace(
            "-- inputs: edfi.school\n",
            "-- inputs: edfi.school\n-- custom: edfi.extra (a integer)\n",
        );
        write(&dir, "ic", "thing.sql", &elsewhere);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(
            err.contains("custom input `edfi.extra` must be a table of schema custom"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn inputs_must_be_replicated_tables_of_the_group() {
        let dir = tempdir("unconfigured");
        let file = write(&dir, "ic", "thing.sql", GOOD);
        let err = Models::load(&dir, &["ic"], &set(&["edfi.student"])).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].file, file);
        assert!(err.0[0].reason.contains("edfi.school"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn only_enabled_groups_are_read() {
        let dir = tempdir("groups");
        write(&dir, "ic", "thing.sql", GOOD);
        write(&dir, "illuminate", "broken.sql", "SELECT 1;");
        let models = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"])).unwrap();
        assert_eq!(models.models().len(), 1);
        let none = Models::load(&dir, &["absent"], &HashSet::new()).unwrap();
        assert!(none.is_empty());
        assert!(Models::load(&dir, &["illuminate"], &HashSet::new()).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn models_reading_models_come_after_them_and_cycles_are_errors() {
        let dir = tempdir("order");
        write(&dir, "ic", "b.sql", GOOD);
        write(
            &dir,
            "ic",
            "a.sql",
            "-- model: roster.athing\n-- inputs: roster.thing\nCREATE TABLE roster.athing (n bigint NOT NULL, PRIMARY KEY (n));\nSELECT COUNT(*) AS n FROM roster.thing t;\n",
        );
        let configured = set(&["edfi.student", "edfi.school"]);
        let models = Models::load(&dir, &["ic"], &configured).unwrap();
        let names: Vec<&str> = models.models().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["roster.thing", "roster.athing"]);
        assert_eq!(models.models()[1].upstream, ["roster.thing"]);
        write(
            &dir,
            "ic",
            "b.sql",
            &GOOD
                .replace(
                    "-- inputs: edfi.school",
                    "-- inputs: edfi.school, roster.athing",
                )
                .replace(
                    "CROSS JOIN edfi.school sc",
                    "CROSS JOIN edfi.school sc CROSS JOIN roster.athing",
                ),
        );
        let err = Models::load(&dir, &["ic"], &configured).unwrap_err();
        assert!(err.to_string().contains("dependency cycle"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn non_portable_types_and_syntax_are_errors() {
        let dir = tempdir("portable");
        write(
            &dir,
            "ic",
            "thing.sql",
            &GOOD
                .replace("amount decimal(9, 3)", "amount text")
                .replace("CAST(NULL AS decimal(9,3))", "NULL::text"),
        );
        let err = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("column amount: type `text`"), "{err}");
        assert!(err.contains("`::` is not valid"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn headers_and_keys_are_checked() {
        let dir = tempdir("headers");
        let configured = set(&["edfi.student", "edfi.school"]);
        for (from, to, expect) in [
            (
                "-- model: roster.thing",
                "-- model: roster.other",
                "header names model roster.other",
            ),
            (
                "schoolid integer NOT NULL",
                "schoolid integer",
                "primary key column schoolid must be declared NOT NULL",
            ),
            (
                "-- model: roster.thing",
                "-- modell: roster.thing",
                "missing the `-- model: schema.table` header line",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &GOOD.replace(from, to));
            let err = Models::load(&dir, &["ic"], &configured)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn history_names_a_year_column_and_needs_the_school_years() {
        let dir = tempdir("history");
        let with = |line: &str| {
            GOOD.replace(
                "-- inputs: edfi.school\n",
                &format!("-- inputs: edfi.school\n{line}\n"),
            )
        };
        let years = set(&["edfi.student", "edfi.school", "edfi.schoolyeartype"]);
        write(&dir, "ic", "thing.sql", &with("-- history: schoolid"));
        let models = Models::load(&dir, &["ic"], &years).unwrap();
        assert_eq!(models.models()[0].history.as_deref(), Some("schoolid"));
        // The current school year is read from edfi.schoolyeartype, not an input of the SELECT.
        assert_eq!(models.models()[0].inputs, ["edfi.school", "edfi.student"]);
        let err = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("add SchoolYearType to the group's `tables`"),
            "{err}"
        );
        for (line, expect) in [
            (
                "-- history: year",
                "`-- history: year` names no column of the table",
            ),
            (
                "-- history: amount",
                "the column is decimal(9,3), not the school year",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &with(line));
            let err = Models::load(&dir, &["ic"], &years).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn students_of_maps_an_input_of_an_incremental_model_with_replicated_tables() {
        let dir = tempdir("students_of");
        let line = "-- students_of: edfi.school: SELECT s.studentusi FROM edfi.student s JOIN {changed} c ON c.schoolid = 1";
        let model = |extra: &str| {
            GOOD.replace(
                "-- inputs: edfi.school\n",
                &format!("-- inputs: edfi.school\n-- incremental: studentnumber\n{extra}\n"),
            )
        };
        let all = set(&["edfi.student", "edfi.school"]);
        write(&dir, "ic", "thing.sql", &model(line));
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        assert_eq!(models.models()[0].students_of[0].0, "edfi.school");
        for (extra, expect) in [
            (
                line.replace("{changed}", "edfi.school"),
                "where {changed} is the flush's rows",
            ),
            (
                line.replace("edfi.school:", "edfi.staff:"),
                "edfi.staff is not an input of the model, a model it reads or an input of one",
            ),
            (
                line.replace("edfi.student s", "edfi.staff s"),
                "reads edfi.staff, not replicated tables",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &model(&extra));
            let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        let plain = GOOD.replace(
            "-- inputs: edfi.school\n",
            &format!("-- inputs: edfi.school\n{line}\n"),
        );
        write(&dir, "ic", "thing.sql", &plain);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(err.contains("only an incremental model"), "{err}");
        // A model it reads: the rows that model's refresh changed are mapped.
        write(
            &dir,
            "ic",
            "up.sql",
            "-- model: ids.up\n-- inputs: edfi.school\n\
             CREATE TABLE ids.up (schoolid integer NOT NULL, PRIMARY KEY (schoolid));\n\
             SELECT schoolid FROM edfi.school;\n",
        );
        let reads_up = model(&line.replace("edfi.school:", "ids.up:"))
            .replace("-- inputs: edfi.school\n", "-- inputs: ids.up\n")
            .replace("CROSS JOIN edfi.school sc", "CROSS JOIN ids.up sc");
        write(&dir, "ic", "thing.sql", &reads_up);
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        let thing = models
            .models()
            .iter()
            .find(|m| m.name == "roster.thing")
            .unwrap();
        assert_eq!(thing.upstream, ["ids.up"]);
        assert_eq!(thing.students_of[0].0, "ids.up");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn refresh_by_names_a_column_and_inputs_of_the_model() {
        let dir = tempdir("refresh_by");
        let model = |extra: &str| {
            GOOD.replace(
                "-- inputs: edfi.school\n",
                &format!("-- inputs: edfi.school\n{extra}\n"),
            )
        };
        let all = set(&["edfi.student", "edfi.school"]);
        write(
            &dir,
            "ic",
            "thing.sql",
            &model("-- refresh_by: SchoolId = schoolid: edfi.school"),
        );
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        assert_eq!(
            models.models()[0].refresh_by,
            Some(RefreshBy {
                column: "schoolid".into(),
                key: "schoolid".into(),
                inputs: vec!["edfi.school".into()],
            })
        );
        write(
            &dir,
            "ic",
            "thing.sql",
            &model("-- refresh_by: schoolid = schoolid: edfi.school\n-- index: Amount, schoolid"),
        );
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        assert_eq!(models.models()[0].index, ["amount", "schoolid"]);
        for (extra, expect) in [
            (
                "-- index: schoolid, nothere",
                "`-- index: nothere` names no column",
            ),
            (
                "-- refresh_by: schoolid: edfi.school",
                "write `-- refresh_by:",
            ),
            (
                "-- refresh_by: schoolid = schoolid:",
                "write `-- refresh_by:",
            ),
            (
                "-- refresh_by: nothere = schoolid: edfi.school",
                "`-- refresh_by: nothere = …` names no column",
            ),
            (
                "-- refresh_by: schoolid = schoolid: edfi.staff",
                "lists edfi.staff, not input(s) of the model",
            ),
            (
                "-- incremental: studentnumber\n-- refresh_by: schoolid = schoolid: edfi.school",
                "exclude each other",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &model(extra));
            let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
            assert!(err.contains(expect), "{extra}: {err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_upstream_tables_are_described_from_their_declarations() {
        let dir = tempdir("standin");
        write(&dir, "ic", "b.sql", GOOD);
        write(
            &dir,
            "ic",
            "a.sql",
            "-- model: roster.athing\n-- inputs: roster.thing\nCREATE TABLE roster.athing (n bigint NOT NULL, PRIMARY KEY (n));\nWITH x AS (SELECT t.schoolid FROM roster.thing t) SELECT COUNT(*) AS n FROM x;\n",
        );
        let models = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"])).unwrap();
        let up = &models.models()[0];
        let sql = models.models()[1].select_with_stand_ins(&[(&up.name, &up.columns)]);
        assert!(
            sql.starts_with(
                "WITH \"roster__thing\" AS (SELECT CAST(NULL AS varchar(32)) AS \"studentnumber\""
            ),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE 1 = 0), x AS (SELECT t.schoolid FROM \"roster__thing\" t)"),
            "{sql}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn column_types_parse_to_one_spelling() {
        assert_eq!(ColumnType::parse("INT").unwrap(), ColumnType::Integer);
        assert_eq!(
            ColumnType::parse("character varying(20)").unwrap(),
            ColumnType::Varchar(20)
        );
        assert_eq!(
            ColumnType::parse("NUMERIC(5, 2)").unwrap(),
            ColumnType::Decimal(5, 2)
        );
        assert!(ColumnType::parse("varchar").is_err());
        assert!(ColumnType::parse("timestamptz").is_err());
        assert_eq!(ColumnType::Decimal(5, 2).to_string(), "decimal(5,2)");
    }
}

//! Printing the `sqlparser` AST of a T-SQL statement as PostgreSQL. Only the constructs listed in
//! the module documentation are printed; anything else is an error that names it.

use sqlparser::ast::{
    self, BinaryOperator, CastKind, ColumnOption, Distinct, DuplicateTreatment, Expr, FromTable,
    FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, JoinConstraint,
    JoinOperator, LimitClause, ObjectName, ObjectNamePart, ObjectType, OrderBy, OrderByKind, Query,
    SchemaName, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, SetOperator,
    SetQuantifier, TableAlias, TableConstraint, TableFactor, TableFunctionArgs, TableWithJoins,
    TopQuantity, UnaryOperator, Value,
};

use super::{convert, sqltype, Statement};
use crate::types::{ColumnDef, ColumnDefault, SqlError, TableDef};

/// `@@IDENTITY`: the last identity value the session's inserts were given, which the server
/// keeps in the setting `sim.identity` (see `Session::insert`).
const LAST_IDENTITY: &str =
    "CAST(NULLIF(current_setting('sim.identity', true), '') AS numeric(38,0))";
/// `SCOPE_IDENTITY()`: the same within the current batch or `sp_executesql` call
/// (`sim.scope_identity`, cleared when the next one starts).
const SCOPE_IDENTITY: &str =
    "CAST(NULLIF(current_setting('sim.scope_identity', true), '') AS numeric(38,0))";

/// What `@@VERSION` shows.
const VERSION: &str = "Microsoft SQL Server 2022 (RTM) - 16.0.0 (X64) ods-sim: a SQL Server \
                       simulator backed by PostgreSQL";

/// A PostgreSQL quoted identifier, case preserved.
pub(super) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A PostgreSQL string literal.
pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::unsupported(what)
}

/// A table or view name resolved as SQL Server does for the simulator's single database:
/// unqualified names are in `dbo`, a database part is dropped, and the system schemas `sys` and
/// `INFORMATION_SCHEMA` are matched case-insensitively (with their view names in the case the
/// backing database uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Relation {
    pub schema: String,
    pub name: String,
}

impl Relation {
    pub(super) fn resolve(parts: &[String]) -> Result<Relation, SqlError> {
        if parts.iter().any(|p| p.starts_with('#')) {
            return Err(unsupported(format!(
                "temporary tables ({})",
                parts.join(".")
            )));
        }
        let (schema, name) = match parts {
            [name] => ("dbo", name),
            [schema, name] | [_, schema, name] => (schema.as_str(), name),
            _ => {
                return Err(unsupported(format!(
                    "four-part names (linked servers): {}",
                    parts.join(".")
                )))
            }
        };
        Ok(if schema.eq_ignore_ascii_case("sys") {
            Relation {
                schema: "sys".into(),
                name: name.to_ascii_lowercase(),
            }
        } else if schema.eq_ignore_ascii_case("INFORMATION_SCHEMA") {
            Relation {
                schema: "INFORMATION_SCHEMA".into(),
                name: name.to_ascii_uppercase(),
            }
        } else {
            Relation {
                schema: schema.to_string(),
                name: name.to_string(),
            }
        })
    }

    pub(super) fn sql(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }

    fn of(name: &ObjectName) -> Result<Relation, SqlError> {
        Relation::resolve(&idents(name)?)
    }
}

fn idents(name: &ObjectName) -> Result<Vec<String>, SqlError> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(i) => Ok(i.value.clone()),
            ObjectNamePart::Function(f) => Err(unsupported(format!("the name part {f}"))),
        })
        .collect()
}

/// Translate one statement that `sqlparser` parsed.
pub(super) fn statement(stmt: &ast::Statement) -> Result<Vec<Statement>, SqlError> {
    let mut p = Printer::new();
    let (sql, returns_rows) = match stmt {
        ast::Statement::Query(q) => (p.query(q)?, true),
        ast::Statement::Insert(insert) => {
            let (sql, rel) = p.insert(insert)?;
            return Ok(vec![Statement::Insert {
                sql,
                params: p.into_params(),
                table: rel.sql(),
                name: rel.name,
                columns: insert.columns.iter().map(|c| c.value.clone()).collect(),
            }]);
        }
        ast::Statement::Update {
            table,
            assignments,
            from,
            selection,
            returning,
            or,
            limit,
        } => {
            if from.is_some() {
                return Err(unsupported("UPDATE … FROM"));
            }
            if returning.is_some() || or.is_some() || limit.is_some() {
                return Err(unsupported(format!("the UPDATE form {stmt}")));
            }
            (p.update(table, assignments, selection.as_ref())?, false)
        }
        ast::Statement::Delete(delete) => (p.delete(delete, None)?, false),
        ast::Statement::Truncate {
            table_names,
            partitions: None,
            identity: None,
            cascade: None,
            on_cluster: None,
            ..
        } => {
            let names = table_names
                .iter()
                .map(|t| Relation::of(&t.name).map(|r| r.sql()))
                .collect::<Result<Vec<_>, _>>()?;
            (format!("TRUNCATE TABLE {}", names.join(", ")), false)
        }
        ast::Statement::CreateTable(create) => {
            return Ok(vec![Statement::CreateTable(create_table(create)?)])
        }
        ast::Statement::CreateSchema {
            schema_name: SchemaName::Simple(name),
            if_not_exists,
            with: None,
            options: None,
            default_collate_spec: None,
            clone: None,
        } => {
            let [schema] = idents(name)?
                .try_into()
                .map_err(|_| unsupported(format!("the schema name {name}")))?;
            let ine = if *if_not_exists { "IF NOT EXISTS " } else { "" };
            (format!("CREATE SCHEMA {ine}{}", quote(&schema)), false)
        }
        ast::Statement::Drop {
            object_type,
            if_exists,
            names,
            cascade: false,
            restrict: false,
            purge: false,
            temporary: false,
            table: None,
        } => return drop(*object_type, *if_exists, names),
        other => {
            let text = other.to_string();
            let short: String = text.chars().take(60).collect();
            return Err(unsupported(format!("the statement `{short}`")));
        }
    };
    Ok(vec![Statement::Query {
        sql,
        params: p.into_params(),
        returns_rows,
    }])
}

/// `DROP TABLE` / `DROP SCHEMA`. (The backing database's event trigger forgets a dropped
/// table's declared types and change tracking.)
fn drop(
    object_type: ObjectType,
    if_exists: bool,
    names: &[ObjectName],
) -> Result<Vec<Statement>, SqlError> {
    let ie = if if_exists { "IF EXISTS " } else { "" };
    let names = names
        .iter()
        .map(|name| match object_type {
            ObjectType::Table => Ok(Relation::of(name)?.sql()),
            ObjectType::Schema => {
                let [schema] = idents(name)?
                    .try_into()
                    .map_err(|_| unsupported(format!("the schema name {name}")))?;
                Ok(quote(&schema))
            }
            other => Err(unsupported(format!("DROP {other}"))),
        })
        .collect::<Result<Vec<_>, SqlError>>()?;
    Ok(vec![Statement::Query {
        sql: format!("DROP {object_type} {ie}{}", names.join(", ")),
        params: Vec::new(),
        returns_rows: false,
    }])
}

/// `CREATE TABLE` becomes a table definition that `ct::create_table` creates and records.
fn create_table(c: &ast::CreateTable) -> Result<TableDef, SqlError> {
    if c.or_replace || c.temporary || c.if_not_exists || c.query.is_some() || c.like.is_some() {
        return Err(unsupported(format!(
            "this form of CREATE TABLE ({})",
            c.name
        )));
    }
    let rel = Relation::of(&c.name)?;
    let mut columns = Vec::new();
    let mut primary_key = Vec::new();
    for col in &c.columns {
        let (def, key) = column_def(col)?;
        if key {
            primary_key.push(def.name.clone());
        }
        columns.push(def);
    }
    for constraint in &c.constraints {
        let TableConstraint::PrimaryKey { columns: keys, .. } = constraint else {
            return Err(unsupported(format!(
                "the table constraint {constraint} (only PRIMARY KEY is supported)"
            )));
        };
        if !primary_key.is_empty() {
            return Err(SqlError::new(
                8110,
                16,
                format!(
                    "Cannot add multiple PRIMARY KEY constraints to table '{}'.",
                    rel.name
                ),
            ));
        }
        for key in keys {
            let Expr::Identifier(ident) = &key.column.expr else {
                return Err(unsupported(format!("the key column {}", key.column.expr)));
            };
            primary_key.push(ident.value.clone());
        }
    }
    for key in &primary_key {
        let Some(col) = columns.iter_mut().find(|c| &c.name == key) else {
            return Err(SqlError::new(
                1911,
                16,
                format!("Column name '{key}' does not exist in the target table or view."),
            ));
        };
        col.nullable = false;
    }
    Ok(TableDef {
        schema: rel.schema,
        name: rel.name,
        columns,
        primary_key,
    })
}

/// A column definition of `CREATE TABLE` or `ALTER TABLE … ADD`: name, type, `NULL`/`NOT NULL`,
/// `DEFAULT getdate()`/`newid()`, `IDENTITY(1,1)`; and whether it is declared `PRIMARY KEY`
/// (then it is not nullable).
pub(super) fn column_def(col: &ast::ColumnDef) -> Result<(ColumnDef, bool), SqlError> {
    let mut nullable = true;
    let mut identity = false;
    let mut default = None;
    let mut key = false;
    for opt in &col.options {
        match &opt.option {
            ColumnOption::Null => nullable = true,
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Unique {
                is_primary: true, ..
            } => {
                nullable = false;
                key = true;
            }
            ColumnOption::Default(e) => {
                let mut text: String = e.to_string().split_whitespace().collect();
                while text.starts_with('(') && text.ends_with(')') {
                    text = text[1..text.len() - 1].to_string();
                }
                default = Some(match text.to_ascii_uppercase().as_str() {
                    "GETDATE()" => ColumnDefault::GetDate,
                    "NEWID()" => ColumnDefault::NewId,
                    _ => {
                        return Err(unsupported(format!(
                            "the DEFAULT {e} (column {}; only getdate() and newid())",
                            col.name.value
                        )))
                    }
                });
            }
            ColumnOption::Identity(kind) => {
                let text: String = kind.to_string().split_whitespace().collect();
                if !matches!(text.as_str(), "IDENTITY" | "IDENTITY(1,1)") {
                    return Err(unsupported(format!(
                        "{kind} (column {}; only IDENTITY(1,1))",
                        col.name.value
                    )));
                }
                identity = true;
            }
            other => {
                return Err(unsupported(format!(
                    "the column option {other} (column {})",
                    col.name.value
                )))
            }
        }
    }
    let def = ColumnDef {
        name: col.name.value.clone(),
        ty: sqltype::parse(&col.data_type, 1)?,
        nullable,
        identity,
        default,
    };
    Ok((def, key))
}

/// Prints expressions and queries, numbering the T-SQL variables (`@P1`, …) as `$1`, … in the
/// order they first appear.
pub(super) struct Printer {
    params: Vec<String>,
}

impl Printer {
    pub(super) fn new() -> Self {
        Printer { params: Vec::new() }
    }

    pub(super) fn into_params(self) -> Vec<String> {
        self.params
    }

    fn param(&mut self, name: &str) -> String {
        let n = match self
            .params
            .iter()
            .position(|p| p.eq_ignore_ascii_case(name))
        {
            Some(i) => i + 1,
            None => {
                self.params.push(name.to_string());
                self.params.len()
            }
        };
        format!("${n}")
    }

    fn query(&mut self, q: &Query) -> Result<String, SqlError> {
        if q.with.is_some() {
            return Err(unsupported("common table expressions (WITH)"));
        }
        if q.for_clause.is_some() {
            return Err(unsupported("FOR XML / FOR JSON"));
        }
        if !q.locks.is_empty() {
            return Err(unsupported("FOR UPDATE / FOR SHARE"));
        }
        let (mut sql, top) = match q.body.as_ref() {
            SetExpr::Select(s) => {
                let top = self.top(s)?;
                (self.select(s)?, top)
            }
            other => (self.set_expr(other)?, None),
        };
        if let Some(order_by) = &q.order_by {
            sql.push_str(" ORDER BY ");
            sql.push_str(&self.order_by(order_by)?);
        }
        let offset = match &q.limit_clause {
            None => None,
            Some(LimitClause::LimitOffset {
                limit: None,
                offset: Some(o),
                limit_by,
            }) if limit_by.is_empty() => Some(self.limit_expr(&o.value)?),
            Some(LimitClause::LimitOffset {
                limit: None,
                offset: None,
                limit_by,
            }) if limit_by.is_empty() => None,
            Some(_) => return Err(unsupported("LIMIT clauses (use TOP or OFFSET … FETCH)")),
        };
        let fetch = match &q.fetch {
            None => None,
            Some(f) if !f.with_ties && !f.percent => Some(match &f.quantity {
                Some(n) => self.limit_expr(n)?,
                None => "1".to_string(),
            }),
            Some(_) => return Err(unsupported("FETCH … PERCENT / WITH TIES")),
        };
        if top.is_some() && (offset.is_some() || fetch.is_some()) {
            return Err(unsupported("TOP together with OFFSET … FETCH"));
        }
        if let Some(limit) = top.or(fetch) {
            sql.push_str(" LIMIT ");
            sql.push_str(&limit);
        }
        if let Some(offset) = offset {
            sql.push_str(" OFFSET ");
            sql.push_str(&offset);
        }
        Ok(sql)
    }

    fn set_expr(&mut self, body: &SetExpr) -> Result<String, SqlError> {
        match body {
            SetExpr::Select(s) => {
                let top = self.top(s)?;
                let select = self.select(s)?;
                Ok(match top {
                    Some(limit) => format!("({select} LIMIT {limit})"),
                    None => select,
                })
            }
            SetExpr::Query(q) => Ok(format!("({})", self.query(q)?)),
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                let op = match op {
                    SetOperator::Union => "UNION",
                    SetOperator::Except => "EXCEPT",
                    SetOperator::Intersect => "INTERSECT",
                    other => return Err(unsupported(format!("the set operator {other}"))),
                };
                let quantifier = match set_quantifier {
                    SetQuantifier::None => "",
                    SetQuantifier::All => " ALL",
                    SetQuantifier::Distinct => " DISTINCT",
                    other => return Err(unsupported(format!("{op} {other}"))),
                };
                let left = self.set_expr(left)?;
                let right = self.set_expr(right)?;
                Ok(format!("{left} {op}{quantifier} {right}"))
            }
            SetExpr::Values(values) => {
                let rows = values
                    .rows
                    .iter()
                    .map(|row| Ok(format!("({})", self.expr_list(row)?)))
                    .collect::<Result<Vec<_>, SqlError>>()?;
                Ok(format!("VALUES {}", rows.join(", ")))
            }
            other => Err(unsupported(format!("the query {other}"))),
        }
    }

    fn top(&mut self, s: &Select) -> Result<Option<String>, SqlError> {
        let Some(top) = &s.top else {
            return Ok(None);
        };
        if top.percent || top.with_ties {
            return Err(unsupported("TOP … PERCENT / WITH TIES"));
        }
        match &top.quantity {
            Some(TopQuantity::Expr(e)) => Ok(Some(self.limit_expr(e)?)),
            Some(TopQuantity::Constant(n)) => Ok(Some(n.to_string())),
            None => Err(unsupported("TOP without a row count")),
        }
    }

    fn limit_expr(&mut self, e: &Expr) -> Result<String, SqlError> {
        let text = self.expr(e)?;
        Ok(if is_atom(e) {
            text
        } else {
            format!("({text})")
        })
    }

    fn select(&mut self, s: &Select) -> Result<String, SqlError> {
        if s.into.is_some() {
            return Err(unsupported("SELECT … INTO"));
        }
        if !s.named_window.is_empty() {
            return Err(unsupported("WINDOW clauses"));
        }
        let mut sql = String::from("SELECT ");
        match &s.distinct {
            None => {}
            Some(Distinct::Distinct) => sql.push_str("DISTINCT "),
            Some(Distinct::On(_)) => return Err(unsupported("DISTINCT ON")),
        }
        let items = s
            .projection
            .iter()
            .map(|item| self.select_item(item))
            .collect::<Result<Vec<_>, _>>()?;
        sql.push_str(&items.join(", "));
        if !s.from.is_empty() {
            let from = s
                .from
                .iter()
                .map(|t| self.table_with_joins(t))
                .collect::<Result<Vec<_>, _>>()?;
            sql.push_str(" FROM ");
            sql.push_str(&from.join(", "));
        }
        if let Some(w) = &s.selection {
            sql.push_str(" WHERE ");
            sql.push_str(&self.expr(w)?);
        }
        match &s.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(unsupported("GROUP BY … WITH ROLLUP / CUBE"));
                }
                if !exprs.is_empty() {
                    sql.push_str(" GROUP BY ");
                    sql.push_str(&self.expr_list(exprs)?);
                }
            }
            GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL")),
        }
        if let Some(h) = &s.having {
            sql.push_str(" HAVING ");
            sql.push_str(&self.expr(h)?);
        }
        Ok(sql)
    }

    fn select_item(&mut self, item: &SelectItem) -> Result<String, SqlError> {
        Ok(match item {
            SelectItem::UnnamedExpr(e) => self.expr(e)?,
            SelectItem::ExprWithAlias { expr, alias } => {
                format!("{} AS {}", self.expr(expr)?, quote(&alias.value))
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                format!("{}.*", qualifier(&idents(n)?)?)
            }
            SelectItem::Wildcard(_) => "*".to_string(),
            other => return Err(unsupported(format!("the select item {other}"))),
        })
    }

    fn order_by(&mut self, order_by: &OrderBy) -> Result<String, SqlError> {
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err(unsupported("ORDER BY ALL"));
        };
        let items = exprs
            .iter()
            .map(|o| {
                if o.options.nulls_first.is_some() || o.with_fill.is_some() {
                    return Err(unsupported(format!("the ORDER BY item {o}")));
                }
                let dir = match o.options.asc {
                    None => "",
                    Some(true) => " ASC",
                    Some(false) => " DESC",
                };
                Ok(format!("{}{dir}", self.expr(&o.expr)?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(items.join(", "))
    }

    fn table_with_joins(&mut self, t: &TableWithJoins) -> Result<String, SqlError> {
        let mut sql = self.table_factor(&t.relation)?;
        for join in &t.joins {
            let (kw, constraint) = match &join.join_operator {
                JoinOperator::Join(c) => ("JOIN", Some(c)),
                JoinOperator::Inner(c) => ("INNER JOIN", Some(c)),
                JoinOperator::Left(c) => ("LEFT JOIN", Some(c)),
                JoinOperator::LeftOuter(c) => ("LEFT OUTER JOIN", Some(c)),
                JoinOperator::Right(c) => ("RIGHT JOIN", Some(c)),
                JoinOperator::RightOuter(c) => ("RIGHT OUTER JOIN", Some(c)),
                JoinOperator::FullOuter(c) => ("FULL OUTER JOIN", Some(c)),
                JoinOperator::CrossJoin(c) => ("CROSS JOIN", Some(c)),
                JoinOperator::CrossApply => return Err(unsupported("CROSS APPLY")),
                JoinOperator::OuterApply => return Err(unsupported("OUTER APPLY")),
                _ => return Err(unsupported(format!("the join {join}"))),
            };
            sql.push(' ');
            sql.push_str(kw);
            sql.push(' ');
            sql.push_str(&self.table_factor(&join.relation)?);
            match constraint {
                Some(JoinConstraint::On(e)) => {
                    sql.push_str(" ON ");
                    sql.push_str(&self.expr(e)?);
                }
                Some(JoinConstraint::None) | None => {}
                Some(JoinConstraint::Using(_)) => return Err(unsupported("JOIN … USING")),
                Some(JoinConstraint::Natural) => return Err(unsupported("NATURAL JOIN")),
            }
        }
        Ok(sql)
    }

    fn table_factor(&mut self, t: &TableFactor) -> Result<String, SqlError> {
        match t {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                ..
            } => {
                if let Some(args) = args {
                    return if is_changetable(name) {
                        self.changetable(args, alias.as_ref())
                    } else {
                        Err(unsupported(format!("the table-valued function {name}")))
                    };
                }
                for hint in with_hints {
                    let ignored = matches!(hint, Expr::Identifier(Ident { value, quote_style: None, .. })
                        if ["NOLOCK", "READUNCOMMITTED", "READCOMMITTED"].iter().any(|h| value.eq_ignore_ascii_case(h)));
                    if !ignored {
                        return Err(unsupported(format!("the table hint {hint}")));
                    }
                }
                if version.is_some() {
                    return Err(unsupported("FOR SYSTEM_TIME (temporal tables)"));
                }
                Ok(format!(
                    "{}{}",
                    Relation::of(name)?.sql(),
                    table_alias(alias.as_ref())
                ))
            }
            TableFactor::Derived {
                lateral: false,
                subquery,
                alias,
            } => Ok(format!(
                "({}){}",
                self.query(subquery)?,
                table_alias(alias.as_ref())
            )),
            other => Err(unsupported(format!("the FROM item {other}"))),
        }
    }

    /// `CHANGETABLE('s', 't', v) AS a` (as the front end rewrote `CHANGETABLE(CHANGES s.t, v)`)
    /// → `ct."changes:s.t"(v) AS "a"` (the change function named by `ct::changes_function`).
    fn changetable(
        &mut self,
        args: &TableFunctionArgs,
        alias: Option<&TableAlias>,
    ) -> Result<String, SqlError> {
        let text = |a: &FunctionArg| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        let [schema, table, FunctionArg::Unnamed(FunctionArgExpr::Expr(version))] =
            args.args.as_slice()
        else {
            return Err(unsupported("CHANGETABLE with these arguments"));
        };
        let (Some(schema), Some(table)) = (text(schema), text(table)) else {
            return Err(unsupported("CHANGETABLE with these arguments"));
        };
        if alias.is_none() {
            return Err(SqlError::new(
                102,
                15,
                "A table returned by the CHANGETABLE function must be aliased.",
            ));
        }
        Ok(format!(
            "{}({}){}",
            crate::ct::changes_function(&schema, &table),
            self.expr(version)?,
            table_alias(alias)
        ))
    }

    fn insert(&mut self, i: &ast::Insert) -> Result<(String, Relation), SqlError> {
        let ast::TableObject::TableName(name) = &i.table else {
            return Err(unsupported(format!("the INSERT target {}", i.table)));
        };
        if i.returning.is_some()
            || i.on.is_some()
            || i.or.is_some()
            || i.ignore
            || i.overwrite
            || i.replace_into
            || i.partitioned.is_some()
            || !i.after_columns.is_empty()
            || !i.assignments.is_empty()
            || i.table_alias.is_some()
        {
            return Err(unsupported(format!("the INSERT form {i}")));
        }
        let rel = Relation::of(name)?;
        let mut sql = format!("INSERT INTO {}", rel.sql());
        if !i.columns.is_empty() {
            let cols: Vec<String> = i.columns.iter().map(|c| quote(&c.value)).collect();
            sql.push_str(&format!(" ({})", cols.join(", ")));
        }
        match &i.source {
            Some(q) => {
                sql.push(' ');
                sql.push_str(&self.query(q)?);
            }
            None => sql.push_str(" DEFAULT VALUES"),
        }
        Ok((sql, rel))
    }

    fn update(
        &mut self,
        table: &TableWithJoins,
        assignments: &[ast::Assignment],
        selection: Option<&Expr>,
    ) -> Result<String, SqlError> {
        if !table.joins.is_empty() {
            return Err(unsupported("UPDATE with joins"));
        }
        let TableFactor::Table { args: None, .. } = &table.relation else {
            return Err(unsupported(format!("UPDATE of {}", table.relation)));
        };
        let mut sql = format!("UPDATE {} SET ", self.table_factor(&table.relation)?);
        let sets = assignments
            .iter()
            .map(|a| {
                let ast::AssignmentTarget::ColumnName(col) = &a.target else {
                    return Err(unsupported("UPDATE … SET (a, b) = …"));
                };
                let parts = idents(col)?;
                let column = parts.last().map(|c| quote(c)).unwrap_or_default();
                Ok(format!("{column} = {}", self.expr(&a.value)?))
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
        sql.push_str(&sets.join(", "));
        if let Some(w) = selection {
            sql.push_str(" WHERE ");
            sql.push_str(&self.expr(w)?);
        }
        Ok(sql)
    }

    /// `DELETE`; with `limit` (from `DELETE TOP (n)`), only the first n matching rows.
    pub(super) fn delete(
        &mut self,
        d: &ast::Delete,
        limit: Option<&Expr>,
    ) -> Result<String, SqlError> {
        if !d.tables.is_empty() {
            return Err(unsupported("DELETE t FROM … (multi-table DELETE)"));
        }
        if d.using.is_some() || d.returning.is_some() || !d.order_by.is_empty() || d.limit.is_some()
        {
            return Err(unsupported(format!("the DELETE form {d}")));
        }
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
        let [TableWithJoins { relation, joins }] = from.as_slice() else {
            return Err(unsupported("DELETE from several tables"));
        };
        if !joins.is_empty() {
            return Err(unsupported("DELETE with joins"));
        }
        let TableFactor::Table { args: None, .. } = relation else {
            return Err(unsupported(format!("DELETE from {relation}")));
        };
        let target = self.table_factor(relation)?;
        let limit = limit.map(|n| self.limit_expr(n)).transpose()?;
        let filter = match &d.selection {
            Some(w) => format!(" WHERE {}", self.expr(w)?),
            None => String::new(),
        };
        Ok(match limit {
            None => format!("DELETE FROM {target}{filter}"),
            Some(n) => {
                format!(
                    "DELETE FROM {target} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {target}{filter} LIMIT {n}))"
                )
            }
        })
    }

    fn expr_list(&mut self, exprs: &[Expr]) -> Result<String, SqlError> {
        let items = exprs
            .iter()
            .map(|e| self.expr(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(items.join(", "))
    }

    /// An expression used as the operand of an operator other than AND/OR: parenthesized
    /// unless it is atomic, so that operator precedence cannot differ from T-SQL's.
    fn operand(&mut self, e: &Expr) -> Result<String, SqlError> {
        let text = self.expr(e)?;
        Ok(if needs_parens(e) {
            format!("({text})")
        } else {
            text
        })
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Result<String, SqlError> {
        let not = |negated: &bool| if *negated { "NOT " } else { "" };
        Ok(match e {
            Expr::Identifier(i) => self.identifier(i)?,
            Expr::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(|i| i.value.clone()).collect();
                let (column, qual) = names.split_last().unwrap_or((&names[0], &[]));
                if qual.is_empty() {
                    quote(column)
                } else {
                    format!("{}.{}", qualifier(qual)?, quote(column))
                }
            }
            Expr::Value(v) => value(&v.value)?,
            Expr::Nested(inner) => format!("({})", self.expr(inner)?),
            Expr::BinaryOp { left, op, right } => self.binary(left, op, right)?,
            Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => format!("NOT {}", self.expr(expr)?),
                UnaryOperator::Plus => self.operand(expr)?,
                UnaryOperator::Minus => {
                    if is_atom(expr) {
                        format!("-{}", self.expr(expr)?)
                    } else {
                        format!("-({})", self.expr(expr)?)
                    }
                }
                UnaryOperator::PGBitwiseNot => format!("~{}", self.operand(expr)?),
                other => return Err(unsupported(format!("the operator {other}"))),
            },
            Expr::IsNull(x) => format!("{} IS NULL", self.operand(x)?),
            Expr::IsNotNull(x) => format!("{} IS NOT NULL", self.operand(x)?),
            Expr::IsDistinctFrom(a, b) => {
                format!("{} IS DISTINCT FROM {}", self.operand(a)?, self.operand(b)?)
            }
            Expr::IsNotDistinctFrom(a, b) => {
                format!(
                    "{} IS NOT DISTINCT FROM {}",
                    self.operand(a)?,
                    self.operand(b)?
                )
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => format!(
                "{} {}IN ({})",
                self.operand(expr)?,
                not(negated),
                self.expr_list(list)?
            ),
            Expr::InSubquery {
                expr,
                subquery,
                negated,
            } => format!(
                "{} {}IN ({})",
                self.operand(expr)?,
                not(negated),
                self.query(subquery)?
            ),
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => format!(
                "{} {}BETWEEN {} AND {}",
                self.operand(expr)?,
                not(negated),
                self.operand(low)?,
                self.operand(high)?
            ),
            Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            } => {
                let mut sql = format!(
                    "{} {}LIKE {}",
                    self.operand(expr)?,
                    not(negated),
                    self.operand(pattern)?
                );
                if let Some(esc) = escape_char {
                    sql.push_str(&format!(" ESCAPE {}", value(esc)?));
                }
                sql
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let mut sql = String::from("CASE");
                if let Some(op) = operand {
                    sql.push(' ');
                    sql.push_str(&self.expr(op)?);
                }
                for when in conditions {
                    sql.push_str(&format!(
                        " WHEN {} THEN {}",
                        self.expr(&when.condition)?,
                        self.expr(&when.result)?
                    ));
                }
                if let Some(e) = else_result {
                    sql.push_str(&format!(" ELSE {}", self.expr(e)?));
                }
                sql.push_str(" END");
                sql
            }
            Expr::Cast {
                kind: CastKind::Cast,
                expr,
                data_type,
                format: None,
            } => self.cast(expr, data_type)?,
            Expr::Cast {
                kind: CastKind::TryCast,
                ..
            } => return Err(unsupported("TRY_CAST")),
            Expr::Convert {
                is_try: false,
                expr,
                data_type: Some(data_type),
                charset: None,
                styles,
                ..
            } => self.convert(expr, data_type, styles)?,
            Expr::Convert { is_try: true, .. } => return Err(unsupported("TRY_CONVERT")),
            Expr::Function(f) => self.function(f)?,
            Expr::Subquery(q) => format!("({})", self.query(q)?),
            Expr::Exists { subquery, negated } => {
                format!("{}EXISTS ({})", not(negated), self.query(subquery)?)
            }
            Expr::Substring {
                expr,
                substring_from: Some(from),
                substring_for: Some(len),
                ..
            } => format!(
                "substring({} FROM {} FOR {})",
                self.expr(expr)?,
                self.expr(from)?,
                self.expr(len)?
            ),
            // The backing database is UTF-8; comparisons and sorting use its collation.
            Expr::Collate { expr, .. } => self.expr(expr)?,
            other => return Err(unsupported(format!("the expression {other}"))),
        })
    }

    fn identifier(&mut self, i: &Ident) -> Result<String, SqlError> {
        if i.quote_style.is_some() {
            return Ok(quote(&i.value));
        }
        if let Some(var) = i.value.strip_prefix("@@") {
            return Ok(match var.to_ascii_uppercase().as_str() {
                "VERSION" => literal(VERSION),
                "SPID" => "pg_backend_pid()".to_string(),
                "IDENTITY" => LAST_IDENTITY.to_string(),
                "SERVERNAME" => "'ods-sim'".to_string(),
                _ => return Err(unsupported(format!("the system variable {}", i.value))),
            });
        }
        if i.value.starts_with('@') {
            return Ok(self.param(&i.value));
        }
        Ok(quote(&i.value))
    }

    fn binary(&mut self, l: &Expr, op: &BinaryOperator, r: &Expr) -> Result<String, SqlError> {
        let sym = match op {
            BinaryOperator::Or => {
                if let Some((cols, vals)) = keyset(l, r) {
                    // SQL Server seeks the index for each disjunct; PostgreSQL seeks for a row
                    // comparison. Not `>`: PostgreSQL estimates a row comparison by its first
                    // column alone, and `k1 > v1` on the last value of k1 looks empty, which
                    // makes sorting every row after the page look cheaper than the seek.
                    let (cols, vals) = (self.expr_list(&cols)?, self.expr_list(&vals)?);
                    return Ok(format!("(({cols}) >= ({vals}) AND ({cols}) <> ({vals}))"));
                }
                return Ok(format!("{} OR {}", self.expr(l)?, self.expr(r)?));
            }
            BinaryOperator::And => {
                return Ok(format!("{} AND {}", self.expr(l)?, self.expr(r)?));
            }
            BinaryOperator::Plus if is_string(l) || is_string(r) => "||",
            BinaryOperator::Plus => "+",
            BinaryOperator::StringConcat => "||",
            BinaryOperator::Minus => "-",
            BinaryOperator::Multiply => "*",
            BinaryOperator::Divide => "/",
            BinaryOperator::Modulo => "%",
            BinaryOperator::Gt => ">",
            BinaryOperator::Lt => "<",
            BinaryOperator::GtEq => ">=",
            BinaryOperator::LtEq => "<=",
            BinaryOperator::Eq => "=",
            BinaryOperator::NotEq => "<>",
            BinaryOperator::BitwiseAnd => "&",
            BinaryOperator::BitwiseOr => "|",
            BinaryOperator::BitwiseXor => "#",
            other => return Err(unsupported(format!("the operator {other}"))),
        };
        Ok(format!("{} {sym} {}", self.operand(l)?, self.operand(r)?))
    }

    fn function(&mut self, f: &ast::Function) -> Result<String, SqlError> {
        let parts = idents(&f.name)?;
        let [name] = parts.as_slice() else {
            return Err(unsupported(format!("the function {}", f.name)));
        };
        if f.over.is_some() {
            return Err(unsupported("window functions (OVER)"));
        }
        if f.filter.is_some()
            || f.null_treatment.is_some()
            || !f.within_group.is_empty()
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return Err(unsupported(format!("the function call {f}")));
        }
        let (distinct, args): (bool, &[FunctionArg]) = match &f.args {
            FunctionArguments::None => (false, &[]),
            FunctionArguments::List(list) if list.clauses.is_empty() => (
                list.duplicate_treatment == Some(DuplicateTreatment::Distinct),
                &list.args,
            ),
            _ => return Err(unsupported(format!("the function call {f}"))),
        };
        let upper = name.to_ascii_uppercase();
        let lower = name.to_ascii_lowercase();
        let without_parens = matches!(f.args, FunctionArguments::None);
        if without_parens && upper != "CURRENT_TIMESTAMP" {
            return Err(unsupported(format!("the function {name}")));
        }
        let d = if distinct { "DISTINCT " } else { "" };
        if distinct
            && !matches!(
                upper.as_str(),
                "COUNT" | "COUNT_BIG" | "SUM" | "AVG" | "MIN" | "MAX"
            )
        {
            return Err(unsupported(format!("DISTINCT in {name}")));
        }
        if let ("COUNT" | "COUNT_BIG", [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]) =
            (upper.as_str(), args)
        {
            let ty = if upper == "COUNT" {
                "integer"
            } else {
                "bigint"
            };
            return Ok(format!("count({d}*)::{ty}"));
        }
        let exprs = args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                other => Err(unsupported(format!(
                    "the function argument {other} of {name}"
                ))),
            })
            .collect::<Result<Vec<&Expr>, SqlError>>()?;
        let arity = |range: std::ops::RangeInclusive<usize>| {
            if range.contains(&exprs.len()) {
                Ok(())
            } else {
                Err(SqlError::new(
                    174,
                    15,
                    format!(
                        "The {lower} function requires {} argument(s).",
                        if range.start() == range.end() {
                            range.start().to_string()
                        } else {
                            format!("{} to {}", range.start(), range.end())
                        }
                    ),
                ))
            }
        };
        let args = |p: &mut Printer| -> Result<String, SqlError> {
            let items = exprs
                .iter()
                .map(|e| p.expr(e))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(items.join(", "))
        };
        Ok(match upper.as_str() {
            "COUNT" | "COUNT_BIG" => {
                arity(1..=1)?;
                let ty = if upper == "COUNT" {
                    "integer"
                } else {
                    "bigint"
                };
                format!("count({d}{})::{ty}", args(self)?)
            }
            "MIN" | "MAX" | "AVG" => {
                arity(1..=1)?;
                format!("{lower}({d}{})", args(self)?)
            }
            "SUM" => {
                arity(1..=1)?;
                format!("sum({d}{}){}", args(self)?, convert::sum_result(exprs[0]))
            }
            "HASHBYTES" => {
                arity(2..=2)?;
                self.hashbytes(exprs[0], exprs[1])?
            }
            "ISNULL" => {
                arity(2..=2)?;
                format!("coalesce({})", args(self)?)
            }
            "COALESCE" | "CONCAT" => {
                arity(2..=254)?;
                format!("{lower}({})", args(self)?)
            }
            "NULLIF" | "LEFT" | "RIGHT" | "ROUND" => {
                arity(2..=2)?;
                format!("{lower}({})", args(self)?)
            }
            "REPLACE" => {
                arity(3..=3)?;
                format!("replace({})", args(self)?)
            }
            "UPPER" | "LOWER" | "LTRIM" | "RTRIM" | "ABS" | "FLOOR" => {
                arity(1..=1)?;
                format!("{lower}({})", args(self)?)
            }
            "CEILING" => {
                arity(1..=1)?;
                format!("ceil({})", args(self)?)
            }
            "LEN" => {
                arity(1..=1)?;
                format!("length(rtrim({}))", args(self)?)
            }
            "DATALENGTH" => {
                arity(1..=1)?;
                format!("octet_length({})", args(self)?)
            }
            "SCOPE_IDENTITY" => {
                arity(0..=0)?;
                SCOPE_IDENTITY.to_string()
            }
            "NEWID" => {
                arity(0..=0)?;
                "gen_random_uuid()".to_string()
            }
            "GETDATE" | "SYSDATETIME" | "CURRENT_TIMESTAMP" => {
                arity(0..=0)?;
                "statement_timestamp()::timestamp".to_string()
            }
            "GETUTCDATE" | "SYSUTCDATETIME" => {
                arity(0..=0)?;
                "(statement_timestamp() AT TIME ZONE 'UTC')".to_string()
            }
            "SYSDATETIMEOFFSET" => {
                arity(0..=0)?;
                "statement_timestamp()".to_string()
            }
            "DB_NAME" => {
                arity(0..=1)?;
                if exprs.is_empty() {
                    "sim.db_name()".to_string()
                } else {
                    format!(
                        "(SELECT ods_sim_db.name FROM sys.databases AS ods_sim_db \
                         WHERE ods_sim_db.database_id = {})",
                        args(self)?
                    )
                }
            }
            "DB_ID" => {
                arity(0..=1)?;
                if exprs.is_empty() {
                    "sim.db_id()".to_string()
                } else {
                    format!(
                        "(SELECT ods_sim_db.database_id FROM sys.databases AS ods_sim_db \
                         WHERE ods_sim_db.name = {})",
                        args(self)?
                    )
                }
            }
            "SCHEMA_NAME" => {
                arity(0..=1)?;
                if exprs.is_empty() {
                    "'dbo'".to_string()
                } else {
                    format!("sim.schema_name({})", args(self)?)
                }
            }
            "SERVERPROPERTY" => {
                arity(1..=1)?;
                let Expr::Value(v) = exprs[0] else {
                    return Err(unsupported("SERVERPROPERTY with a non-literal argument"));
                };
                let (Value::SingleQuotedString(p) | Value::NationalStringLiteral(p)) = &v.value
                else {
                    return Err(unsupported("SERVERPROPERTY with a non-literal argument"));
                };
                server_property(p)
            }
            "HAS_PERMS_BY_NAME" => {
                arity(3..=5)?;
                format!("sim.has_perms_by_name({})", args(self)?)
            }
            "CHANGE_TRACKING_CURRENT_VERSION" => {
                arity(0..=0)?;
                "ct.current_version()".to_string()
            }
            "CHANGE_TRACKING_MIN_VALID_VERSION" => {
                arity(1..=1)?;
                format!("ct.min_valid_version({})", args(self)?)
            }
            "OBJECT_ID" | "OBJECT_NAME" | "OBJECT_SCHEMA_NAME" => {
                arity(1..=2)?;
                format!("ct.{lower}({})", self.expr(exprs[0])?)
            }
            _ => return Err(unsupported(format!("the function {name}"))),
        })
    }
}

fn server_property(property: &str) -> String {
    match property.to_ascii_lowercase().as_str() {
        "productversion" => "'16.0.0'",
        "productmajorversion" => "'16'",
        "productminorversion" => "'0'",
        "productlevel" => "'RTM'",
        "edition" => "'Developer Edition (64-bit)'",
        "engineedition" => "3",
        "servername" | "machinename" => "'ods-sim'",
        "collation" => "'SQL_Latin1_General_CP1_CI_AS'",
        "ishadrenabled"
        | "isclustered"
        | "isfulltextinstalled"
        | "issingleuser"
        | "isintegratedsecurityonly" => "0",
        _ => "NULL",
    }
    .to_string()
}

fn table_alias(alias: Option<&TableAlias>) -> String {
    match alias {
        None => String::new(),
        Some(a) if a.columns.is_empty() => format!(" AS {}", quote(&a.name.value)),
        Some(a) => {
            let cols: Vec<String> = a.columns.iter().map(|c| quote(&c.name.value)).collect();
            format!(" AS {}({})", quote(&a.name.value), cols.join(", "))
        }
    }
}

/// The qualifier of a column or `*`: an alias or table name, or a schema-qualified table.
fn qualifier(parts: &[String]) -> Result<String, SqlError> {
    match parts {
        [single] => Ok(quote(single)),
        _ => Ok(Relation::resolve(parts)?.sql()),
    }
}

fn is_changetable(name: &ObjectName) -> bool {
    matches!(name.0.as_slice(), [ObjectNamePart::Identifier(i)]
        if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("CHANGETABLE"))
}

fn value(v: &Value) -> Result<String, SqlError> {
    Ok(match v {
        Value::Number(n, _) => n.to_string(),
        Value::SingleQuotedString(s) | Value::NationalStringLiteral(s) => literal(s),
        Value::HexStringLiteral(h) => format!("'\\x{h}'::bytea"),
        Value::Null => "NULL".to_string(),
        other => return Err(unsupported(format!("the literal {other}"))),
    })
}

/// Prints as one token: needs no parentheses as an operand.
/// Keyset pagination's "after this key" as a client writes it for SQL Server, which has no row
/// values: `(k1 > v1) OR (k1 = v1 AND k2 > v2) OR …` (two or more disjuncts, `l OR r`). Returns
/// the key columns and their values: where the disjunction is true, and only there,
/// `(k1, …) >= (v1, …) AND (k1, …) <> (v1, …)` is, NULLs included (both are then not true).
fn keyset(l: &Expr, r: &Expr) -> Option<(Vec<Expr>, Vec<Expr>)> {
    fn disjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                disjuncts(left, out);
                disjuncts(right, out);
            }
            Expr::Nested(inner) => match inner.as_ref() {
                or @ Expr::BinaryOp {
                    op: BinaryOperator::Or,
                    ..
                } => disjuncts(or, out),
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
    fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                conjuncts(left, out);
                conjuncts(right, out);
            }
            Expr::Nested(inner) => conjuncts(inner, out),
            other => out.push(other),
        }
    }
    let mut ds = Vec::new();
    disjuncts(l, &mut ds);
    disjuncts(r, &mut ds);
    let (mut cols, mut vals): (Vec<Expr>, Vec<Expr>) = (Vec::new(), Vec::new());
    for (i, d) in ds.iter().enumerate() {
        let mut terms = Vec::new();
        conjuncts(d, &mut terms);
        if terms.len() != i + 1 {
            return None;
        }
        for (j, t) in terms.iter().enumerate() {
            let Expr::BinaryOp { left, op, right } = t else {
                return None;
            };
            let want = if j == i {
                BinaryOperator::Gt
            } else {
                BinaryOperator::Eq
            };
            let column = matches!(
                left.as_ref(),
                Expr::Identifier(_) | Expr::CompoundIdentifier(_)
            );
            if *op != want || !column {
                return None;
            }
            if j == i {
                cols.push(left.as_ref().clone());
                vals.push(right.as_ref().clone());
            } else if cols[j] != **left || vals[j] != **right {
                return None;
            }
        }
    }
    (cols.len() >= 2).then_some((cols, vals))
}

fn is_atom(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Identifier(_)
            | Expr::CompoundIdentifier(_)
            | Expr::Value(_)
            | Expr::Nested(_)
            | Expr::Function(_)
            | Expr::Subquery(_)
            | Expr::Cast { .. }
            | Expr::Convert { .. }
            | Expr::Case { .. }
            | Expr::Substring { .. }
    ) || matches!(e, Expr::Collate { expr, .. } if is_atom(expr))
}

fn needs_parens(e: &Expr) -> bool {
    match e {
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => !matches!(expr.as_ref(), Expr::Value(_)),
        other => !is_atom(other),
    }
}

/// The expression is certainly a string, so `+` on it is concatenation.
fn is_string(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(
            v.value,
            Value::SingleQuotedString(_) | Value::NationalStringLiteral(_)
        ),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => is_string(inner),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Plus | BinaryOperator::StringConcat,
            right,
        } => is_string(left) || is_string(right),
        Expr::Cast { data_type, .. }
        | Expr::Convert {
            data_type: Some(data_type),
            ..
        } => sqltype::is_character(data_type),
        Expr::Substring { .. } => true,
        Expr::Function(f) => matches!(
            f.name.to_string().to_ascii_uppercase().as_str(),
            "CONCAT"
                | "UPPER"
                | "LOWER"
                | "LTRIM"
                | "RTRIM"
                | "REPLACE"
                | "LEFT"
                | "RIGHT"
                | "DB_NAME"
                | "SCHEMA_NAME"
                | "OBJECT_NAME"
                | "OBJECT_SCHEMA_NAME"
        ),
        Expr::Case {
            conditions,
            else_result,
            ..
        } => {
            conditions.iter().any(|w| is_string(&w.result))
                || else_result.as_deref().is_some_and(is_string)
        }
        Expr::Identifier(i) => {
            i.quote_style.is_none()
                && ["@@VERSION", "@@SERVERNAME"]
                    .iter()
                    .any(|v| i.value.eq_ignore_ascii_case(v))
        }
        _ => false,
    }
}

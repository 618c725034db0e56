//! `ALTER TABLE`, read by the token-level front end: `ENABLE/DISABLE CHANGE_TRACKING` becomes a
//! call of the `ct` functions; `ADD column_definition [, …]`, `ALTER COLUMN`,
//! `DROP COLUMN [IF EXISTS] name [, …]`, `ADD [CONSTRAINT name] PRIMARY KEY (…)` and
//! `DROP CONSTRAINT [IF EXISTS] name` become a [`TableAlter`] that `ct::alter_table` checks and
//! runs. Column definitions and types are read by `sqlparser` (`Parser::parse_column_def`) and
//! mean what they mean in `CREATE TABLE` (`pg::column_def`).

use sqlparser::ast::ColumnOption;
use sqlparser::tokenizer::Token;

use super::front::{procedure, Cursor};
use super::pg::{column_def, literal, Relation};
use super::{sqltype, Statement};
use crate::types::{ColumnChange, DroppedColumn, SqlError, TableAlter};

/// Table constraints T-SQL allows in `ADD`, which the simulator does not (but a primary key).
const CONSTRAINT_KEYWORDS: &[&str] = &["UNIQUE", "FOREIGN", "CHECK"];

/// `ALTER TABLE name …`, the cursor just after `TABLE`.
pub(super) fn alter_table(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    let rel = Relation::resolve(&cur.object_name()?)?;
    if cur.is_kw(0, "ENABLE") || cur.is_kw(0, "DISABLE") {
        out.push(change_tracking(cur, &rel)?);
        return Ok(());
    }
    let change = if cur.eat_kw("ADD") {
        add(cur)?
    } else if cur.is_kw(0, "ALTER") && cur.is_kw(1, "COLUMN") {
        cur.eat_kw("ALTER");
        cur.eat_kw("COLUMN");
        alter_column(cur)?
    } else if cur.eat_kw("DROP") {
        drop_columns(cur)?
    } else {
        return Err(SqlError::unsupported(format!(
            "ALTER TABLE … {} (only ADD, ALTER COLUMN, DROP COLUMN, DROP CONSTRAINT and \
             ENABLE/DISABLE CHANGE_TRACKING are supported)",
            cur.peek()
        )));
    };
    out.push(Statement::AlterTable(TableAlter {
        schema: rel.schema,
        name: rel.name,
        change,
    }));
    Ok(())
}

/// `ENABLE CHANGE_TRACKING [WITH (TRACK_COLUMNS_UPDATED = ON|OFF)]` / `DISABLE CHANGE_TRACKING`.
fn change_tracking(cur: &mut Cursor, rel: &Relation) -> Result<Statement, SqlError> {
    let enable = cur.eat_kw("ENABLE");
    if !enable {
        cur.expect_kw("DISABLE")?;
    }
    if !cur.eat_kw("CHANGE_TRACKING") {
        return Err(SqlError::unsupported(format!(
            "ALTER TABLE … {} {} (only ENABLE/DISABLE CHANGE_TRACKING is supported)",
            if enable { "ENABLE" } else { "DISABLE" },
            cur.peek()
        )));
    }
    let schema = literal(&rel.schema);
    let name = literal(&rel.name);
    let sql = if enable {
        let mut track_columns = false;
        if cur.eat_kw("WITH") {
            cur.expect(&Token::LParen, "(")?;
            cur.expect_kw("TRACK_COLUMNS_UPDATED")?;
            cur.expect(&Token::Eq, "=")?;
            track_columns = cur.on_off()?;
            cur.expect(&Token::RParen, ")")?;
        }
        format!("SELECT ct.enable_table({schema}, {name}, {track_columns})")
    } else {
        format!("SELECT ct.disable_table({schema}, {name})")
    };
    Ok(procedure(sql))
}

/// `ADD column_definition [, …]`. T-SQL has no `COLUMN` keyword here.
fn add(cur: &mut Cursor) -> Result<ColumnChange, SqlError> {
    if cur.is_kw(0, "COLUMN") {
        return Err(SqlError::new(
            156,
            15,
            "Incorrect syntax near the keyword 'COLUMN'.",
        ));
    }
    if cur.is_kw(0, "CONSTRAINT") || cur.is_kw(0, "PRIMARY") {
        return primary_key(cur);
    }
    let mut columns = Vec::new();
    loop {
        if let Some(kw) = ["CONSTRAINT", "PRIMARY"]
            .iter()
            .chain(CONSTRAINT_KEYWORDS)
            .find(|kw| cur.is_kw(0, kw))
        {
            return Err(SqlError::unsupported(format!(
                "ALTER TABLE … ADD {kw} (only column definitions)"
            )));
        }
        let (def, key) = column_def(&cur.parse_with(|p| p.parse_column_def())?)?;
        if key || def.identity {
            return Err(SqlError::unsupported(format!(
                "adding {} column with ALTER TABLE … ADD (column {})",
                if key { "a PRIMARY KEY" } else { "an IDENTITY" },
                def.name
            )));
        }
        columns.push(def);
        if !cur.eat(&Token::Comma) {
            break;
        }
    }
    if cur.is_kw(0, "WITH") {
        return Err(SqlError::unsupported("ALTER TABLE … ADD … WITH VALUES"));
    }
    Ok(ColumnChange::Add(columns))
}

/// `[CONSTRAINT name] PRIMARY KEY [CLUSTERED | NONCLUSTERED] (column [ASC | DESC] [, …])`, the
/// cursor after `ADD`.
fn primary_key(cur: &mut Cursor) -> Result<ColumnChange, SqlError> {
    let name = if cur.eat_kw("CONSTRAINT") {
        Some(cur.name_word("a constraint name")?)
    } else {
        None
    };
    if !(cur.is_kw(0, "PRIMARY") && cur.is_kw(1, "KEY")) {
        return Err(SqlError::unsupported(format!(
            "ALTER TABLE … ADD CONSTRAINT … {} (only PRIMARY KEY)",
            cur.peek()
        )));
    }
    cur.eat_kw("PRIMARY");
    cur.eat_kw("KEY");
    if !cur.eat_kw("CLUSTERED") {
        cur.eat_kw("NONCLUSTERED");
    }
    cur.expect(&Token::LParen, "(")?;
    let mut columns = Vec::new();
    loop {
        columns.push(cur.name_word("a column name")?);
        if !cur.eat_kw("ASC") {
            cur.eat_kw("DESC");
        }
        if !cur.eat(&Token::Comma) {
            break;
        }
    }
    cur.expect(&Token::RParen, ")")?;
    if cur.is_kw(0, "WITH") || cur.is_kw(0, "ON") {
        return Err(SqlError::unsupported(format!(
            "ALTER TABLE … ADD … PRIMARY KEY (…) {} (index options and filegroups)",
            cur.peek()
        )));
    }
    Ok(ColumnChange::AddPrimaryKey { name, columns })
}

/// `ALTER COLUMN name type [NULL | NOT NULL]`, the cursor after `COLUMN`.
fn alter_column(cur: &mut Cursor) -> Result<ColumnChange, SqlError> {
    let col = cur.parse_with(|p| p.parse_column_def())?;
    let mut nullable = true;
    for opt in &col.options {
        match &opt.option {
            ColumnOption::Null => nullable = true,
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Default(_) => {
                return Err(SqlError::new(
                    156,
                    15,
                    "Incorrect syntax near the keyword 'DEFAULT'.",
                ))
            }
            other => {
                return Err(SqlError::unsupported(format!(
                    "{other} in ALTER TABLE … ALTER COLUMN {} (only a type and NULL or NOT NULL)",
                    col.name.value
                )))
            }
        }
    }
    Ok(ColumnChange::Alter {
        name: col.name.value,
        ty: sqltype::parse(&col.data_type, 1)?,
        nullable,
    })
}

/// `DROP COLUMN [IF EXISTS] name [, [COLUMN [IF EXISTS]] name …]` or
/// `DROP CONSTRAINT [IF EXISTS] name`, the cursor after `DROP`. `IF EXISTS` holds for the names
/// up to the next `COLUMN`.
fn drop_columns(cur: &mut Cursor) -> Result<ColumnChange, SqlError> {
    if cur.eat_kw("CONSTRAINT") {
        let if_exists = cur.is_kw(0, "IF") && cur.is_kw(1, "EXISTS");
        if if_exists {
            cur.eat_kw("IF");
            cur.eat_kw("EXISTS");
        }
        let name = cur.name_word("a constraint name")?;
        if cur.eat(&Token::Comma) {
            return Err(SqlError::unsupported(
                "ALTER TABLE … DROP CONSTRAINT of several constraints",
            ));
        }
        return Ok(ColumnChange::DropConstraint { name, if_exists });
    }
    let mut columns = Vec::new();
    let mut if_exists = false;
    loop {
        if cur.eat_kw("COLUMN") {
            if_exists = cur.is_kw(0, "IF") && cur.is_kw(1, "EXISTS");
            if if_exists {
                cur.eat_kw("IF");
                cur.eat_kw("EXISTS");
            }
        } else if columns.is_empty() || cur.is_kw(0, "CONSTRAINT") {
            return Err(SqlError::unsupported(format!(
                "ALTER TABLE … DROP {} (only DROP COLUMN and DROP CONSTRAINT are supported)",
                cur.peek()
            )));
        }
        let name = cur.name_word("a column name")?;
        columns.push(DroppedColumn { name, if_exists });
        if !cur.eat(&Token::Comma) {
            return Ok(ColumnChange::Drop(columns));
        }
    }
}

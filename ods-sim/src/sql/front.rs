//! The token-level front end: tokenizing a batch, splitting it into statements, and the
//! statements `sqlparser` cannot parse (transaction control, `SET` options, `USE`,
//! `ALTER DATABASE … SET CHANGE_TRACKING`, `ALTER TABLE` (in `alter_table`), `EXEC sim.*`,
//! `DELETE TOP (n)`), each parsed by a small recursive descent over tokens.

use sqlparser::ast;
use sqlparser::dialect::MsSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use super::pg::{quote, Printer, Relation};
use super::{Isolation, Statement};
use crate::types::SqlError;

static EOF: Token = Token::EOF;

/// Keywords that always begin a new statement when they appear outside parentheses, so a
/// statement that `sqlparser` parses never runs into the next one.
const STATEMENT_KEYWORDS: &[&str] = &[
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVE",
    "USE",
    "EXEC",
    "EXECUTE",
    "ALTER",
    "TRUNCATE",
    "CREATE",
    "DROP",
    "DECLARE",
    "MERGE",
    "WHILE",
    "PRINT",
    "GO",
    "RETURN",
    "RAISERROR",
    "THROW",
    "GRANT",
    "REVOKE",
    "DENY",
];

/// Tokenize a batch without whitespace and comments, with `CHANGETABLE(CHANGES s.t, v)`
/// rewritten to `CHANGETABLE('s', 't', v)` so that `sqlparser` reads it as a table function.
pub(super) fn tokenize(batch: &str) -> Result<Vec<TokenWithSpan>, SqlError> {
    let tokens = Tokenizer::new(&MsSqlDialect {}, batch)
        .tokenize_with_location()
        .map_err(|e| SqlError::new(102, 15, format!("Incorrect syntax: {e}")))?;
    let tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    rewrite_changetable(tokens)
}

fn rewrite_changetable(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, SqlError> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut cur = Cursor::new(&tokens);
    while !cur.at_end() {
        if !cur.is_kw(0, "CHANGETABLE") {
            out.push(tokens[cur.pos].clone());
            cur.pos += 1;
            continue;
        }
        out.push(tokens[cur.pos].clone());
        cur.pos += 1;
        cur.expect(&Token::LParen, "( after CHANGETABLE")?;
        if !cur.eat_kw("CHANGES") {
            return Err(SqlError::unsupported(format!(
                "CHANGETABLE({} …): only CHANGETABLE(CHANGES table, version) is supported",
                cur.peek()
            )));
        }
        let rel = Relation::resolve(&cur.object_name()?)?;
        cur.expect(&Token::Comma, ", after the CHANGETABLE table name")?;
        out.push(TokenWithSpan::wrap(Token::LParen));
        out.push(TokenWithSpan::wrap(Token::SingleQuotedString(rel.schema)));
        out.push(TokenWithSpan::wrap(Token::Comma));
        out.push(TokenWithSpan::wrap(Token::SingleQuotedString(rel.name)));
        out.push(TokenWithSpan::wrap(Token::Comma));
    }
    Ok(out)
}

/// Split the batch into statements and translate each one.
pub(super) fn translate_tokens(tokens: &[TokenWithSpan]) -> Result<Vec<Statement>, SqlError> {
    let mut out = Vec::new();
    let mut cur = Cursor::new(tokens);
    loop {
        while cur.eat(&Token::SemiColon) {}
        if cur.at_end() {
            return Ok(out);
        }
        let Token::Word(w) = cur.peek().clone() else {
            if cur.peek() == &Token::LParen {
                parse_general(&mut cur, Vec::new(), 0, &mut out)?;
                continue;
            }
            return Err(cur.syntax("the start of a statement"));
        };
        if w.quote_style.is_some() {
            return Err(cur.syntax("the start of a statement"));
        }
        match w.value.to_ascii_uppercase().as_str() {
            "SET" => set(&mut cur, &mut out)?,
            "BEGIN" => begin(&mut cur, &mut out)?,
            "COMMIT" | "ROLLBACK" => end_transaction(&mut cur, &mut out)?,
            "USE" => {
                cur.pos += 1;
                let name = cur.name_word("a database name after USE")?;
                out.push(Statement::Use(name));
            }
            "ALTER" => alter(&mut cur, &mut out)?,
            "EXEC" | "EXECUTE" => exec(&mut cur, &mut out)?,
            "DELETE" if cur.is_kw(1, "TOP") => delete_top(&mut cur, &mut out)?,
            "UPDATE" | "INSERT" if cur.is_kw(1, "TOP") => {
                return Err(SqlError::unsupported(format!(
                    "{} TOP (n)",
                    w.value.to_ascii_uppercase()
                )))
            }
            "DELETE" if !cur.is_kw(1, "FROM") => {
                let prefix = vec![cur.toks[cur.pos].clone(), from_token()];
                parse_general(&mut cur, prefix, 1, &mut out)?
            }
            "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" | "CREATE" | "DROP" => {
                parse_general(&mut cur, Vec::new(), 0, &mut out)?
            }
            "WITH" => return Err(SqlError::unsupported("common table expressions (WITH)")),
            "DECLARE" | "IF" | "WHILE" => {
                return Err(SqlError::unsupported(format!(
                    "{} statements (variables and control flow)",
                    w.value.to_ascii_uppercase()
                )))
            }
            other => return Err(SqlError::unsupported(format!("{other} statements"))),
        }
    }
}

/// A statement `sqlparser` parses: it ends where the parser stops, and never after a `;` or a
/// keyword that always starts a statement. The parser reads `prefix` in place of the next `skip`
/// tokens.
fn parse_general(
    cur: &mut Cursor,
    prefix: Vec<TokenWithSpan>,
    skip: usize,
    out: &mut Vec<Statement>,
) -> Result<(), SqlError> {
    let stmt = parse_statement(cur, prefix, skip)?;
    out.extend(super::pg::statement(&stmt)?);
    Ok(())
}

fn parse_statement(
    cur: &mut Cursor,
    mut prefix: Vec<TokenWithSpan>,
    skip: usize,
) -> Result<ast::Statement, SqlError> {
    let end = cur.segment_end();
    let replaced = prefix.len();
    prefix.extend_from_slice(&cur.toks[cur.pos + skip..end]);
    let mut parser = Parser::new(&MsSqlDialect {}).with_tokens_with_locations(prefix);
    let stmt = parser.parse_statement().map_err(parse_error)?;
    cur.pos += skip + parser.index().saturating_sub(replaced);
    Ok(stmt)
}

/// `FROM`, for `DELETE t` (T-SQL's optional `FROM`, which `sqlparser` requires).
fn from_token() -> TokenWithSpan {
    TokenWithSpan::wrap(Token::make_keyword("FROM"))
}

pub(super) fn parse_error(e: ParserError) -> SqlError {
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "the statement is nested too deeply".to_string(),
    };
    SqlError::new(102, 15, format!("Incorrect syntax: {msg}"))
}

fn set(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    cur.pos += 1;
    if cur.eat_kw("TRANSACTION") {
        cur.expect_kw("ISOLATION")?;
        cur.expect_kw("LEVEL")?;
        let level = if cur.eat_kw("SNAPSHOT") {
            Isolation::Snapshot
        } else if cur.eat_kw("SERIALIZABLE") {
            Isolation::Serializable
        } else if cur.eat_kw("REPEATABLE") {
            cur.expect_kw("READ")?;
            Isolation::RepeatableRead
        } else if cur.eat_kw("READ") {
            if cur.eat_kw("COMMITTED") {
                Isolation::ReadCommitted
            } else if cur.eat_kw("UNCOMMITTED") {
                Isolation::ReadUncommitted
            } else {
                return Err(cur.syntax("COMMITTED or UNCOMMITTED"));
            }
        } else {
            return Err(cur.syntax("an isolation level"));
        };
        out.push(Statement::SetIsolation(level));
        return Ok(());
    }
    let option = cur.name_word("a SET option")?;
    let upper = option.to_ascii_uppercase();
    if option.starts_with('@') {
        return Err(SqlError::unsupported(format!("SET {option} (variables)")));
    }
    match upper.as_str() {
        "IDENTITY_INSERT" => {
            let rel = Relation::resolve(&cur.object_name()?)?;
            let on = cur.on_off()?;
            out.push(Statement::SetIdentityInsert {
                table: rel.sql(),
                name: rel.name,
                on,
            });
            return Ok(());
        }
        "TEXTSIZE" | "LOCK_TIMEOUT" | "DATEFIRST" => {
            cur.number()?;
        }
        "DATEFORMAT" | "LANGUAGE" => {
            cur.name_word("a value")?;
        }
        "DEADLOCK_PRIORITY" => {
            if !(cur.eat_kw("LOW") || cur.eat_kw("NORMAL") || cur.eat_kw("HIGH")) {
                cur.number()?;
            }
        }
        _ => {
            let mut options = vec![(required_value(&upper)?, upper)];
            while cur.eat(&Token::Comma) {
                let option = cur.name_word("a SET option")?.to_ascii_uppercase();
                options.push((required_value(&option)?, option));
            }
            let on = cur.on_off()?;
            for (required, option) in options {
                if required.is_some_and(|r| r != on) {
                    return Err(SqlError::unsupported(format!(
                        "SET {option} {}",
                        if on { "ON" } else { "OFF" }
                    )));
                }
            }
        }
    }
    out.push(Statement::Nothing);
    Ok(())
}

/// Session options accepted and ignored, with the value they must have when the other value
/// would change the meaning of later statements.
fn required_value(option: &str) -> Result<Option<bool>, SqlError> {
    match option {
        "NOCOUNT"
        | "XACT_ABORT"
        | "ARITHABORT"
        | "ANSI_WARNINGS"
        | "ANSI_PADDING"
        | "ANSI_NULL_DFLT_ON"
        | "NUMERIC_ROUNDABORT"
        | "CURSOR_CLOSE_ON_COMMIT" => Ok(None),
        "ANSI_NULLS" | "QUOTED_IDENTIFIER" | "CONCAT_NULL_YIELDS_NULL" => Ok(Some(true)),
        "IMPLICIT_TRANSACTIONS" => Ok(Some(false)),
        _ => Err(SqlError::unsupported(format!("SET {option}"))),
    }
}

fn begin(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    cur.pos += 1;
    if !(cur.eat_kw("TRAN") || cur.eat_kw("TRANSACTION")) {
        return Err(SqlError::unsupported(format!(
            "BEGIN {} (only BEGIN TRAN[SACTION] is supported; no BEGIN … END blocks)",
            cur.peek()
        )));
    }
    cur.transaction_name();
    if cur.is_kw(0, "WITH") && cur.is_kw(1, "MARK") {
        return Err(SqlError::unsupported("BEGIN TRAN … WITH MARK"));
    }
    out.push(Statement::Begin);
    Ok(())
}

fn end_transaction(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    let commit = cur.is_kw(0, "COMMIT");
    cur.pos += 1;
    if cur.eat_kw("TRAN") || cur.eat_kw("TRANSACTION") {
        cur.transaction_name();
    } else {
        cur.eat_kw("WORK");
    }
    out.push(if commit {
        Statement::Commit
    } else {
        Statement::Rollback
    });
    Ok(())
}

fn alter(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    cur.pos += 1;
    if cur.eat_kw("DATABASE") {
        if !cur.eat_kw("CURRENT") {
            cur.name_word("a database name")?;
        }
        cur.expect_kw("SET")?;
        return alter_database_set(cur, out);
    }
    if cur.eat_kw("TABLE") {
        return super::alter_table::alter_table(cur, out);
    }
    Err(SqlError::unsupported(format!(
        "ALTER {} statements",
        cur.peek()
    )))
}

fn alter_database_set(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    let option = cur.name_word("a database option")?.to_ascii_uppercase();
    match option.as_str() {
        "CHANGE_TRACKING" => {
            if !cur.eat(&Token::Eq) {
                return Err(SqlError::unsupported(
                    "changing CHANGE_TRACKING options without = ON (turn it OFF and ON again)",
                ));
            }
            if !cur.on_off()? {
                out.push(procedure("SELECT ct.disable_database()".to_string()));
                return Ok(());
            }
            let (mut retention, mut units, mut auto_cleanup) = (2, 3, true);
            if cur.eat(&Token::LParen) {
                loop {
                    if cur.eat_kw("CHANGE_RETENTION") {
                        cur.expect(&Token::Eq, "=")?;
                        retention = cur.number()?;
                        units = if cur.eat_kw("MINUTES") {
                            1
                        } else if cur.eat_kw("HOURS") {
                            2
                        } else if cur.eat_kw("DAYS") {
                            3
                        } else {
                            return Err(cur.syntax("MINUTES, HOURS or DAYS"));
                        };
                    } else if cur.eat_kw("AUTO_CLEANUP") {
                        cur.expect(&Token::Eq, "=")?;
                        auto_cleanup = cur.on_off()?;
                    } else {
                        return Err(cur.syntax("CHANGE_RETENTION or AUTO_CLEANUP"));
                    }
                    if !cur.eat(&Token::Comma) {
                        break;
                    }
                }
                cur.expect(&Token::RParen, ")")?;
            }
            out.push(procedure(format!(
                "SELECT ct.enable_database({retention}, {units}, {auto_cleanup})"
            )));
        }
        "ALLOW_SNAPSHOT_ISOLATION" | "READ_COMMITTED_SNAPSHOT" => {
            if !cur.on_off()? {
                return Err(SqlError::unsupported(format!(
                    "turning {option} OFF (it is always on)"
                )));
            }
            if cur.eat_kw("WITH") {
                if cur.eat_kw("ROLLBACK") {
                    cur.expect_kw("IMMEDIATE")?;
                } else {
                    cur.expect_kw("NO_WAIT")?;
                }
            }
            out.push(Statement::Nothing);
        }
        _ => {
            return Err(SqlError::unsupported(format!(
                "ALTER DATABASE … SET {option}"
            )))
        }
    }
    Ok(())
}

/// `EXEC sim.proc @name = value, …` → `SELECT sim."proc"("name" => value, …)`.
fn exec(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    cur.pos += 1;
    if cur.peek() == &Token::LParen || matches!(cur.peek(), Token::SingleQuotedString(_)) {
        return Err(SqlError::unsupported("EXEC of a dynamic SQL string"));
    }
    let parts = cur.object_name()?;
    if parts.first().is_some_and(|p| p.starts_with('@')) {
        return Err(SqlError::unsupported("EXEC with a return status variable"));
    }
    let [schema, proc_name] = parts.as_slice() else {
        return Err(SqlError::unsupported(format!(
            "EXEC {} (only procedures of schema sim are supported)",
            parts.join(".")
        )));
    };
    if !schema.eq_ignore_ascii_case("sim") {
        return Err(SqlError::unsupported(format!(
            "EXEC {schema}.{proc_name} (only procedures of schema sim are supported)"
        )));
    }
    let end = cur.segment_end();
    let mut printer = Printer::new();
    let mut args = Vec::new();
    if cur.pos < end && cur.starts_argument() {
        loop {
            let mut name = None;
            if let Token::Word(w) = cur.peek() {
                if w.quote_style.is_none()
                    && w.value.starts_with('@')
                    && cur.peek_at(1) == &Token::Eq
                {
                    name = Some(w.value[1..].to_string());
                    cur.pos += 2;
                }
            }
            let value = cur.parse_with(|p| p.parse_expr())?;
            if cur.is_kw(0, "OUTPUT") || cur.is_kw(0, "OUT") {
                return Err(SqlError::unsupported("OUTPUT parameters of EXEC"));
            }
            let value = printer.expr(&value)?;
            args.push(match name {
                Some(n) => format!("{} => {value}", quote(&n)),
                None => value,
            });
            if !cur.eat(&Token::Comma) {
                break;
            }
        }
    }
    out.push(Statement::Query {
        sql: format!("SELECT sim.{}({})", quote(proc_name), args.join(", ")),
        params: printer.into_params(),
        returns_rows: true,
    });
    Ok(())
}

/// `DELETE TOP (n) [FROM] t [WHERE …]`: the first n matching rows, chosen by `ctid`.
fn delete_top(cur: &mut Cursor, out: &mut Vec<Statement>) -> Result<(), SqlError> {
    let start = cur.pos;
    cur.pos += 2;
    let limit_tokens = if cur.eat(&Token::LParen) {
        let open = cur.pos;
        let close = cur.matching_paren()?;
        cur.pos = close + 1;
        &cur.toks[open..close]
    } else {
        let at = cur.pos;
        cur.number()?;
        &cur.toks[at..cur.pos]
    };
    if cur.is_kw(0, "PERCENT") {
        return Err(SqlError::unsupported("DELETE TOP (n) PERCENT"));
    }
    let limit = Parser::new(&MsSqlDialect {})
        .with_tokens_with_locations(limit_tokens.to_vec())
        .parse_expr()
        .map_err(parse_error)?;
    let mut skip = cur.pos - start;
    if cur.is_kw(0, "FROM") {
        skip += 1;
    }
    cur.pos = start;
    let prefix = vec![cur.toks[start].clone(), from_token()];
    let stmt = parse_statement(cur, prefix, skip)?;
    let ast::Statement::Delete(delete) = &stmt else {
        return Err(cur.syntax("a DELETE statement"));
    };
    let mut printer = Printer::new();
    let sql = printer.delete(delete, Some(&limit))?;
    out.push(Statement::Query {
        sql,
        params: printer.into_params(),
        returns_rows: false,
    });
    Ok(())
}

pub(super) fn procedure(sql: String) -> Statement {
    Statement::Query {
        sql,
        params: Vec::new(),
        returns_rows: false,
    }
}

/// A position in a token list (whitespace already removed).
pub(super) struct Cursor<'a> {
    toks: &'a [TokenWithSpan],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(toks: &'a [TokenWithSpan]) -> Self {
        Cursor { toks, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len() || self.toks[self.pos].token == Token::EOF
    }

    pub(super) fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> &Token {
        self.toks.get(self.pos + n).map_or(&EOF, |t| &t.token)
    }

    /// The token `n` ahead is the unquoted word `kw` (any case).
    pub(super) fn is_kw(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
    }

    pub(super) fn eat_kw(&mut self, kw: &str) -> bool {
        let found = self.is_kw(0, kw);
        if found {
            self.pos += 1;
        }
        found
    }

    pub(super) fn expect_kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.syntax(kw))
        }
    }

    pub(super) fn eat(&mut self, tok: &Token) -> bool {
        let found = self.peek() == tok;
        if found {
            self.pos += 1;
        }
        found
    }

    pub(super) fn expect(&mut self, tok: &Token, what: &str) -> Result<(), SqlError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.syntax(what))
        }
    }

    pub(super) fn on_off(&mut self) -> Result<bool, SqlError> {
        if self.eat_kw("ON") {
            Ok(true)
        } else if self.eat_kw("OFF") {
            Ok(false)
        } else {
            Err(self.syntax("ON or OFF"))
        }
    }

    /// An integer literal, optionally negative.
    fn number(&mut self) -> Result<i64, SqlError> {
        let negative = self.eat(&Token::Minus);
        let Token::Number(n, _) = self.peek() else {
            return Err(self.syntax("a number"));
        };
        let n: i64 = n.parse().map_err(|_| self.syntax("an integer"))?;
        self.pos += 1;
        Ok(if negative { -n } else { n })
    }

    /// One word (quoted or not), as written.
    pub(super) fn name_word(&mut self, what: &str) -> Result<String, SqlError> {
        match self.peek() {
            Token::Word(Word { value, .. }) => {
                let value = value.clone();
                self.pos += 1;
                Ok(value)
            }
            _ => Err(self.syntax(what)),
        }
    }

    /// `part[.part]*`, brackets and quotes removed.
    pub(super) fn object_name(&mut self) -> Result<Vec<String>, SqlError> {
        let mut parts = vec![self.name_word("an object name")?];
        while self.eat(&Token::Period) {
            parts.push(self.name_word("an object name after .")?);
        }
        Ok(parts)
    }

    /// Run `parse` (a `sqlparser` parser method) over the tokens up to the end of the current
    /// statement at the latest, and move past what it read.
    pub(super) fn parse_with<T>(
        &mut self,
        parse: impl FnOnce(&mut Parser<'_>) -> Result<T, ParserError>,
    ) -> Result<T, SqlError> {
        let end = self.segment_end();
        let mut parser = Parser::new(&MsSqlDialect {})
            .with_tokens_with_locations(self.toks[self.pos..end].to_vec());
        let value = parse(&mut parser).map_err(parse_error)?;
        self.pos += parser.index();
        Ok(value)
    }

    /// The current token can begin an argument of `EXEC` (a literal, `NULL` or a variable).
    fn starts_argument(&self) -> bool {
        match self.peek() {
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Minus
            | Token::Plus => true,
            Token::Word(w) => {
                w.quote_style.is_none()
                    && (w.value.starts_with('@') || w.value.eq_ignore_ascii_case("NULL"))
            }
            _ => false,
        }
    }

    /// The optional name of a transaction after `BEGIN/COMMIT/ROLLBACK TRAN`.
    fn transaction_name(&mut self) {
        if let Token::Word(w) = self.peek() {
            if w.quote_style.is_some() || w.keyword == Keyword::NoKeyword {
                self.pos += 1;
            }
        }
    }

    /// The index of the `)` matching the `(` just before the current position.
    fn matching_paren(&self) -> Result<usize, SqlError> {
        let mut depth = 1usize;
        for (i, t) in self.toks.iter().enumerate().skip(self.pos) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => {}
            }
        }
        Err(self.syntax(")"))
    }

    /// Where the current statement ends at the latest: the next `;` or statement keyword outside
    /// parentheses (not counting the current token).
    fn segment_end(&self) -> usize {
        let mut depth = 0usize;
        for (i, t) in self.toks.iter().enumerate().skip(self.pos) {
            match &t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth = depth.saturating_sub(1),
                Token::SemiColon if depth == 0 => return i,
                Token::Word(w)
                    if depth == 0
                        && i > self.pos
                        && w.quote_style.is_none()
                        && STATEMENT_KEYWORDS
                            .iter()
                            .any(|k| w.value.eq_ignore_ascii_case(k)) =>
                {
                    return i
                }
                _ => {}
            }
        }
        self.toks.len()
    }

    fn syntax(&self, expected: &str) -> SqlError {
        let near = match self.peek() {
            Token::EOF => "the end of the batch".to_string(),
            t => format!("'{t}'"),
        };
        SqlError::new(
            102,
            15,
            format!("Incorrect syntax near {near}: expected {expected}"),
        )
    }
}

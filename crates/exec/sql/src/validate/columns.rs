//! Column rules on the parsed statement (T25): `tables = { t = { columns = [...] } }` or
//! `{ deny_columns = [...] }`.
//!
//! A column allow-list is the control for data the scrubber cannot match: a secret column read
//! through arbitrary computation (`reverse(ssn)`, `substr(token, 1, 4)`) comes back as a value no
//! matcher knows. So a denied column may not be named anywhere: select list, `WHERE`, `JOIN ON`,
//! `USING`, `GROUP BY`, `HAVING`, `ORDER BY`, window clauses, function arguments, subqueries, CTE
//! bodies, DML targets, `SET`, `RETURNING`. Without a schema, names are resolved conservatively:
//!
//! * `q.c` is checked against every restricted relation called `q` (its alias, or its table name)
//!   in the statement's scope and the scopes around it;
//! * an unqualified `c` is refused when any restricted relation in scope would refuse `c`, since
//!   it could be that relation's column (qualify it to name another table's column);
//! * a bare name equal to a restricted relation's alias or name is a whole-row reference
//!   (PostgreSQL `to_json(c)`, `SELECT c FROM customers c`) and is refused, as are `*`, `t.*`,
//!   `TABLE t`, `NATURAL` joins and `INSERT` without a column list over a restricted table;
//! * the one exception is a bare name in `ORDER BY` that is an output alias of the same `SELECT`,
//!   which all three engines read as that output column.

use super::{addr, refuse, Checker};
use airlock_core::config::{HandleKind, TableColumns};
use airlock_core::ErrorCode;
use sqlparser::ast::{
    Assignment, AssignmentTarget, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, TableFactor, TableWithJoins,
};
use std::ops::ControlFlow;

/// A restricted relation in scope: a table with a column rule, under the names a column
/// reference may qualify it with.
pub(super) struct Restricted<'a> {
    /// Its alias and its table name, lower case (matched case-insensitively: stricter).
    names: Vec<String>,
    /// The table as the statement wrote it, for messages.
    shown: String,
    rule: &'a TableColumns,
}

/// The restricted relations of one `SELECT` or DML statement.
pub(super) struct ColumnScope<'a> {
    rels: Vec<Restricted<'a>>,
}

type Flow = ControlFlow<airlock_core::CallError>;

fn whole(shown: &str) -> Flow {
    refuse(
        ErrorCode::ColumnNotAllowed,
        format!("table {shown} has column rules on this handle: name its columns (no *, t.*, whole rows or NATURAL joins)"),
    )
}

fn column(name: &str) -> Flow {
    refuse(
        ErrorCode::ColumnNotAllowed,
        format!("column {name} is not allowed on this handle"),
    )
}

impl<'a> Checker<'a> {
    fn has_rules(&self) -> bool {
        !self.db.columns.is_empty()
    }

    /// The column rule of a relation named in `FROM` or as a DML target, if it is a real table
    /// with one (a CTE in scope is not).
    fn rule_of(&self, name: &ObjectName, target: bool) -> Option<&'a TableColumns> {
        if !target && name.0.len() == 1 {
            if let Some(ObjectNamePart::Identifier(i)) = name.0.first() {
                let key = self.ident_key(i);
                if self
                    .frames
                    .last()
                    .is_some_and(|f| f.visible().any(|c| *c == key))
                {
                    return None;
                }
            }
        }
        let entry = self.allow_list_entry(name)?;
        self.db.columns_of(entry)
    }

    fn restricted(
        &self,
        name: &ObjectName,
        alias: Option<&Ident>,
        target: bool,
    ) -> Option<Restricted<'a>> {
        let rule = self.rule_of(name, target)?;
        let mut names = Vec::new();
        if let Some(a) = alias {
            names.push(a.value.to_lowercase());
        }
        if let Some(ObjectNamePart::Identifier(t)) = name.0.last() {
            names.push(t.value.to_lowercase());
        }
        Some(Restricted {
            names,
            shown: name.to_string(),
            rule,
        })
    }

    /// The restricted relations of a `FROM` item and its joins (nested joins included).
    fn collect(&self, twj: &TableWithJoins, out: &mut Vec<Restricted<'a>>) {
        self.collect_factor(&twj.relation, out);
        for j in &twj.joins {
            self.collect_factor(&j.relation, out);
        }
    }

    fn collect_factor(&self, t: &TableFactor, out: &mut Vec<Restricted<'a>>) {
        match t {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                out.extend(self.restricted(name, alias.as_ref().map(|a| &a.name), false));
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.collect(table_with_joins, out),
            _ => {}
        }
    }

    /// `SELECT`: its scope, then the checks that need the whole of it (`*`, `t.*`, `NATURAL`,
    /// `USING`).
    pub(super) fn enter_select(&mut self, s: &Select) -> Flow {
        if !self.has_rules() {
            return ControlFlow::Continue(());
        }
        let mut rels = Vec::new();
        for twj in &s.from {
            self.collect(twj, &mut rels);
        }
        self.scopes.push(ColumnScope { rels });
        self.check_items(&s.projection)?;
        for twj in &s.from {
            for j in &twj.joins {
                let c = match &j.join_operator {
                    JoinOperator::Join(c)
                    | JoinOperator::Inner(c)
                    | JoinOperator::Left(c)
                    | JoinOperator::LeftOuter(c)
                    | JoinOperator::Right(c)
                    | JoinOperator::RightOuter(c)
                    | JoinOperator::FullOuter(c)
                    | JoinOperator::CrossJoin(c)
                    | JoinOperator::StraightJoin(c) => c,
                    _ => continue,
                };
                match c {
                    JoinConstraint::Natural => {
                        if let Some(r) = self.scopes.last().and_then(|s| s.rels.first()) {
                            return whole(&r.shown);
                        }
                    }
                    JoinConstraint::Using(cols) | JoinConstraint::UsingAlias(cols, _) => {
                        for c in cols {
                            if let Some(ObjectNamePart::Identifier(i)) = c.0.last() {
                                self.check_bare(i)?;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        ControlFlow::Continue(())
    }

    pub(super) fn leave_scope(&mut self) {
        if self.has_rules() {
            self.scopes.pop();
        }
    }

    /// `*` over the current `SELECT`.
    fn check_star(&self) -> Flow {
        match self.scopes.last().and_then(|s| s.rels.first()) {
            Some(r) => whole(&r.shown),
            None => ControlFlow::Continue(()),
        }
    }

    /// `q.*`: refused when `q` may be a restricted relation in any scope.
    fn check_qualified_star(&self, n: &ObjectName) -> Flow {
        let Some(ObjectNamePart::Identifier(q)) = n.0.last() else {
            return ControlFlow::Continue(());
        };
        match self.find(&q.value.to_lowercase()) {
            Some(r) => whole(&r.shown),
            None => ControlFlow::Continue(()),
        }
    }

    fn find(&self, qualifier: &str) -> Option<&Restricted<'a>> {
        self.scopes
            .iter()
            .flat_map(|s| &s.rels)
            .find(|r| r.names.iter().any(|n| n == qualifier))
    }

    /// The column as the database compares it: a quoted PostgreSQL name as written, others in
    /// lower case.
    fn column_key(&self, i: &Ident) -> String {
        if self.kind == HandleKind::Postgres && i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_lowercase()
        }
    }

    /// An unqualified name: a column of any restricted relation in scope, or a whole row.
    fn check_bare(&self, i: &Ident) -> Flow {
        let key = self.column_key(i);
        let lower = i.value.to_lowercase();
        for r in self.scopes.iter().flat_map(|s| &s.rels) {
            if r.names.contains(&lower) {
                return whole(&r.shown);
            }
            if !r.rule.allows(&key) {
                return column(&i.to_string());
            }
        }
        ControlFlow::Continue(())
    }

    /// `q.c`, `s.t.c`, `d.s.t.c`: the column of relation `q`/`t`.
    fn check_qualified(&self, parts: &[Ident]) -> Flow {
        let [.., q, c] = parts else {
            return match parts.first() {
                Some(i) => self.check_bare(i),
                None => ControlFlow::Continue(()),
            };
        };
        let q = q.value.to_lowercase();
        let key = self.column_key(c);
        for r in self.scopes.iter().flat_map(|s| &s.rels) {
            if r.names.contains(&q) && !r.rule.allows(&key) {
                return column(&format!("{}.{}", parts[parts.len() - 2], c));
            }
        }
        ControlFlow::Continue(())
    }

    /// Column references in one expression node; children are visited on their own.
    pub(super) fn check_expr_columns(&self, e: &Expr) -> Flow {
        if self.scopes.is_empty() {
            return ControlFlow::Continue(());
        }
        match e {
            Expr::Identifier(i) if !self.order_aliases.contains(&addr(e)) => self.check_bare(i),
            Expr::CompoundIdentifier(parts) => self.check_qualified(parts),
            Expr::Wildcard(_) => self.check_star(),
            Expr::QualifiedWildcard(n, _) => self.check_qualified_star(n),
            Expr::Function(f) => {
                if let FunctionArguments::List(l) = &f.args {
                    for a in &l.args {
                        let (FunctionArg::Unnamed(x)
                        | FunctionArg::Named { arg: x, .. }
                        | FunctionArg::ExprNamed { arg: x, .. }) = a;
                        if let FunctionArgExpr::QualifiedWildcard(n) = x {
                            self.check_qualified_star(n)?;
                        }
                    }
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    /// Bare `ORDER BY` names that are output aliases of the query's own `SELECT`: their
    /// addresses, skipped by the column checks.
    pub(super) fn note_order_aliases(&mut self, q: &Query) {
        let (Some(ob), SetExpr::Select(s)) = (&q.order_by, q.body.as_ref()) else {
            return;
        };
        let sqlparser::ast::OrderByKind::Expressions(exprs) = &ob.kind else {
            return;
        };
        let aliases: Vec<String> = s
            .projection
            .iter()
            .filter_map(|i| match i {
                SelectItem::ExprWithAlias { alias, .. } => Some(self.column_key(alias)),
                _ => None,
            })
            .collect();
        for o in exprs {
            if let Expr::Identifier(i) = &o.expr {
                if aliases.contains(&self.column_key(i)) {
                    self.order_aliases.insert(addr(&o.expr));
                }
            }
        }
    }

    /// A DML statement's scope: its target (and `FROM`/`USING` tables), with the checks on
    /// the columns it names as targets. `excluded` (PostgreSQL and SQLite `ON CONFLICT`) and a
    /// MySQL row alias name the target.
    pub(super) fn enter_dml(&mut self, s: &sqlparser::ast::Statement) -> Flow {
        use sqlparser::ast::{
            ConflictTarget, FromTable, OnConflictAction, OnInsert, Statement, TableObject,
            UpdateTableFromKind,
        };
        if !self.has_rules() {
            return ControlFlow::Continue(());
        }
        let mut rels = Vec::new();
        let mut targets: Vec<&ObjectName> = Vec::new();
        let mut bare: Vec<&Ident> = Vec::new();
        let returning = match s {
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    if let Some(mut r) =
                        self.restricted(n, i.table_alias.as_ref().map(|a| &a.alias), true)
                    {
                        r.names.push("excluded".into());
                        if let Some(ObjectNamePart::Identifier(x)) =
                            i.insert_alias.as_ref().and_then(|a| a.row_alias.0.last())
                        {
                            r.names.push(x.value.to_lowercase());
                        }
                        if i.columns.is_empty() && i.assignments.is_empty() {
                            return whole(&r.shown);
                        }
                        rels.push(r);
                    }
                }
                targets.extend(&i.columns);
                let mut assigns: Vec<&Assignment> = i.assignments.iter().collect();
                match &i.on {
                    Some(OnInsert::DuplicateKeyUpdate(a)) => assigns.extend(a),
                    Some(OnInsert::OnConflict(oc)) => {
                        if let Some(ConflictTarget::Columns { columns: cols, .. }) =
                            &oc.conflict_target
                        {
                            bare.extend(cols);
                        }
                        if let OnConflictAction::DoUpdate(d) = &oc.action {
                            assigns.extend(&d.assignments);
                        }
                    }
                    _ => {}
                }
                for a in assigns {
                    match &a.target {
                        AssignmentTarget::ColumnName(n) => targets.push(n),
                        AssignmentTarget::Tuple(ns) => targets.extend(ns),
                    }
                }
                i.returning.as_ref()
            }
            Statement::Update(u) => {
                self.collect(&u.table, &mut rels);
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) =
                    &u.from
                {
                    for twj in f {
                        self.collect(twj, &mut rels);
                    }
                }
                for a in &u.assignments {
                    match &a.target {
                        AssignmentTarget::ColumnName(n) => targets.push(n),
                        AssignmentTarget::Tuple(ns) => targets.extend(ns),
                    }
                }
                u.returning.as_ref()
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                for twj in f.iter().chain(d.using.iter().flatten()) {
                    self.collect(twj, &mut rels);
                }
                d.returning.as_ref()
            }
            Statement::Merge(m) => {
                self.collect_factor(&m.table, &mut rels);
                self.collect_factor(&m.source, &mut rels);
                if let Some(r) = rels.first() {
                    return whole(&r.shown);
                }
                None
            }
            _ => None,
        };
        self.scopes.push(ColumnScope { rels });
        for n in targets {
            self.check_target_column(n)?;
        }
        for i in bare {
            self.check_bare(i)?;
        }
        self.check_returning(returning)
    }

    fn check_target_column(&self, n: &ObjectName) -> Flow {
        let idents: Vec<Ident> =
            n.0.iter()
                .filter_map(|p| match p {
                    ObjectNamePart::Identifier(i) => Some(i.clone()),
                    _ => None,
                })
                .collect();
        self.check_qualified(&idents)
    }

    fn check_returning(&self, returning: Option<&Vec<SelectItem>>) -> Flow {
        returning.map_or(ControlFlow::Continue(()), |items| self.check_items(items))
    }

    /// The stars of a select list or a `RETURNING` list (`*`, `t.*`): each must expand to
    /// allowed columns only.
    fn check_items(&self, items: &[SelectItem]) -> Flow {
        for item in items {
            match item {
                SelectItem::Wildcard(_) => self.check_star()?,
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) => self.check_qualified_star(n)?,
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    /// `TABLE t` over a restricted table reads every column.
    pub(super) fn check_table_statement(&self, name: &ObjectName) -> Flow {
        match self.rule_of(name, false) {
            Some(_) => whole(&name.to_string()),
            None => ControlFlow::Continue(()),
        }
    }
}

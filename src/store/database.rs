//! The database as a whole rather than one of its tables: whether it answers, and creating it on
//! first start.

use sqlx::{PgConnection, PgPool};

/// One round trip that needs nothing but a working connection.
pub async fn ping(db: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("select 1 as one").fetch_one(db).await?;
    Ok(())
}

/// Creates the database `name` from a connection to another one (`postgres`). The only runtime
/// SQL left: a database name is an identifier, which no statement can take as a parameter, so it
/// is quoted here instead, and the statement cannot be checked against the migrations (it runs
/// before they exist).
pub async fn create(admin: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(&format!("create database {quoted}")).execute(admin).await?;
    Ok(())
}

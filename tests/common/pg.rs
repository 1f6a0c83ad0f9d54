//! A fresh PostgreSQL schema per test, in the database named by `HARK_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); `.ci/run` starts PostgreSQL.

use std::sync::atomic::{AtomicU64, Ordering};

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn base() -> String {
    std::env::var("HARK_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
}

/// A fresh schema; returns it and a URL (on `host_port`) whose connections use it.
pub async fn fresh_schema(host_port: Option<&str>) -> (String, String) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = base();
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed by these tests: {e}"));
    tokio::spawn(connection);
    let schema = format!(
        "hark_bb_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let mut url = base.clone();
    if let Some(host_port) = host_port {
        url = url.replace("127.0.0.1:5432", host_port);
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    (
        schema.clone(),
        format!("{url}{separator}options=-csearch_path%3D{schema}"),
    )
}

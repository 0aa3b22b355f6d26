//! `pointstream serve` as a newcomer runs it: embedded SQLite, a free port,
//! GraphiQL, health, a development token that works.

mod app;

use app::App;
use eventstore::scratch::ScratchDatabase;

#[test]
fn serve_answers_graphql_graphiql_and_health_on_sqlite() {
    let (app, token) = App::spawn_development(ScratchDatabase::sqlite());

    assert_eq!(app.get("/healthz"), (200, "ok".to_string()));
    assert_eq!(app.get("/readyz").0, 200);
    let (status, graphiql) = app.http("GET", "/graphql", &[("Accept", "text/html")], b"");
    assert!(status == 200 && graphiql.contains("graphiql"), "GraphiQL is served to a browser");
    let (status, metrics) = app.get("/metrics");
    assert!(status == 200 && metrics.contains("pointstream_projection_lag_events"), "{metrics}");

    let stores = app.post_json(None, r#"{"query":"{ stores { id } }"}"#);
    assert_eq!(stores, (200, r#"{"data":{"stores":[]}}"#.to_string()));
    let balances = app.post_json(Some(&token), r#"{"query":"{ balances(member: \"ann\") { balance } }"}"#);
    assert_eq!(balances, (200, r#"{"data":{"balances":[]}}"#.to_string()), "the development token is accepted");
    let anonymous = app.post_json(None, r#"{"query":"{ balances(member: \"ann\") { balance } }"}"#);
    assert!(anonymous.1.contains("UNAUTHENTICATED"), "{anonymous:?}");
    let malformed = app.post_json(None, "{not json");
    assert_eq!(malformed.0, 400, "{malformed:?}");
}

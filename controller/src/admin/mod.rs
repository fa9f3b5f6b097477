//! The admin API: HTTP/JSON on loopback for the `ghatta` CLI and operators' scripts.
//!
//! HTTP/JSON (axum) rather than our framed socket because operators reach for `curl` in the
//! field, and the admin path carries a few requests a minute, never Raft traffic. It listens
//! on loopback by default; remote access goes through SSH.

pub mod accounts;
pub mod actors;
pub mod auth;
pub mod client;
pub mod cockpit;
pub mod dto;
pub mod error;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ghatta_actor_sdk as sdk;
use serde_json::{Value, json};

pub use self::error::{AdminError, ClientError};
use crate::field::FieldStats;
use crate::node::{MembershipError, Node};
use crate::rpc::wire::MemberOp;

/// Largest request body accepted (a tariff table or a customer list fits easily).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

type ApiResult = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn bad(status: StatusCode, msg: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": msg.into() })))
}

/// The field loop's counters `status` adds under `field` (grid health, meter reads, the
/// Modbus line), when the node runs a field loop.
#[derive(Clone, Default)]
pub struct FieldView(pub Option<Arc<FieldStats>>);

/// The router for one node; every method but GET and HEAD needs `auth`'s token.
pub fn router(node: Node, auth: auth::AdminAuth) -> Router {
    router_with_field(
        node,
        auth,
        FieldView::default(),
        cockpit::Cockpit::default(),
    )
}

/// [`router`], with the field loop's counters in `status` and the cockpit's history.
pub fn router_with_field(
    node: Node,
    auth: auth::AdminAuth,
    field: FieldView,
    cockpit: cockpit::Cockpit,
) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route(auth::LOGIN_PATH, get(auth::login_form).post(auth::login))
        .route("/ui/alarms", get(alarms_page))
        .route("/ui/events", get(events_page))
        .route("/ui/customers", get(customers_page))
        .route("/ui/customers/{id}", get(customer_page))
        .route("/ui/tariffs", get(tariffs_page))
        .route("/customers", get(customers))
        .route("/customers/{id}", get(customer_get))
        .route("/tariffs", get(tariffs))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/alarms", get(alarms))
        .route("/events", get(events))
        .route("/member", post(member))
        .route("/topup", post(topup))
        .route("/operator-credit", post(operator_credit))
        .route("/meter/replace", post(meter_replace))
        .route("/tariff", post(tariff))
        .route("/customer", post(customer))
        .route("/billing-config", post(billing_config))
        .route("/balancing-config", post(balancing_config))
        .route("/actors", get(actors::list))
        .route("/actor/deploy", post(actors::deploy))
        .route("/actor/rollback", post(actors::rollback))
        .layer(Extension(field))
        .layer(Extension(cockpit))
        .layer(Extension(auth.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_token,
        ))
        .with_state(node)
}

/// Serve the admin API on an already-bound listener until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    auth: auth::AdminAuth,
) -> std::io::Result<()> {
    serve_with_field(
        vec![listener],
        node,
        auth,
        FieldView::default(),
        cockpit::Cockpit::default(),
    )
    .await
}

/// [`serve`] on every listener (the admin one, and the dashboard's if configured), with the
/// field loop's counters in `status` and, sampled from them, the cockpit's charts (kept in
/// `cockpit`'s store, if it has one). Each request knows its peer's address: `auth` opens
/// reads to loopback peers only.
pub async fn serve_with_field(
    listeners: Vec<tokio::net::TcpListener>,
    node: Node,
    auth: auth::AdminAuth,
    field: FieldView,
    cockpit: cockpit::Cockpit,
) -> std::io::Result<()> {
    // Dropped (and so stopped) when the server ends.
    let _sampler = field
        .0
        .clone()
        .map(|stats| AbortOnDrop(cockpit.spawn_sampler(node.clone(), stats)));
    if listeners.is_empty() {
        return Ok(());
    }
    let router = router_with_field(node, auth, field, cockpit);
    let servers = listeners.into_iter().map(|l| {
        axum::serve(
            l,
            router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future()
    });
    use std::future::IntoFuture as _;
    // The first to stop (an error) stops them all: the caller logs it.
    futures::future::select_all(servers.map(Box::pin)).await.0
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bind the admin listener, with an error naming the address and the config key.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, AdminError> {
    bind_key("admin_listen", addr).await
}

/// Bind a listener configured under node.toml's `key`, with an error naming both.
pub async fn bind_key(
    key: &'static str,
    addr: &str,
) -> Result<tokio::net::TcpListener, AdminError> {
    let sa: SocketAddr =
        addr.parse()
            .map_err(|e: std::net::AddrParseError| AdminError::BadAddress {
                key,
                addr: addr.into(),
                detail: e.to_string(),
            })?;
    tokio::net::TcpListener::bind(sa)
        .await
        .map_err(|error| AdminError::Listen {
            key,
            addr: addr.into(),
            error,
        })
}

/// The status JSON: the node's, with the field loop's counters under `field`.
fn status_json(node: &Node, field: &FieldView) -> Result<Value, (StatusCode, Json<Value>)> {
    let internal = |e: serde_json::Error| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let mut v = serde_json::to_value(node.status()).map_err(internal)?;
    // Added beside the node's fields, none renamed: scripts reading the old ones keep working.
    if let (Some(stats), Some(obj)) = (&field.0, v.as_object_mut()) {
        obj.insert(
            "field".into(),
            serde_json::to_value(stats.snapshot()).map_err(internal)?,
        );
    }
    Ok(v)
}

async fn status(State(node): State<Node>, Extension(field): Extension<FieldView>) -> ApiResult {
    status_json(&node, &field).map(Json)
}

type Page = Result<axum::response::Html<String>, (StatusCode, Json<Value>)>;

/// `GET /`: the cockpit's overview page.
async fn overview_page(
    State(node): State<Node>,
    Extension(field): Extension<FieldView>,
    Extension(cockpit): Extension<cockpit::Cockpit>,
) -> Page {
    let status = status_json(&node, &field)?;
    let now_ms = node.clock().now_ms();
    let c = cockpit.clone();
    let week = tokio::task::spawn_blocking(move || cockpit::week(&c, now_ms))
        .await
        .map_err(internal)?;
    Ok(axum::response::Html(cockpit::overview(
        node.id(),
        &status,
        &cockpit,
        &week,
    )))
}

fn internal(e: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Runs a read of the state machine off the async workers (it copies up to a page of rows
/// under the lock an apply holds).
async fn read_sm<R: Send + 'static>(
    node: &Node,
    f: impl FnOnce(&crate::state::StateMachine) -> R + Send + 'static,
) -> Result<R, (StatusCode, Json<Value>)> {
    let sm = node.state_machine().clone();
    tokio::task::spawn_blocking(move || f(&sm))
        .await
        .map_err(internal)
}

/// `GET /customers?after=C&disconnected=1&limit=N`: a page of accounts in id order.
async fn customers(
    State(node): State<Node>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult {
    let q = accounts::CustomerQuery::parse(query.as_deref())
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    let reply = read_sm(&node, move |sm| accounts::customers(sm, &q)).await?;
    serde_json::to_value(reply).map(Json).map_err(internal)
}

/// One customer's account and recent relay moves and ledger lines, or a 404 that says so.
async fn read_customer(
    node: &Node,
    id: &str,
) -> Result<accounts::CustomerReply, (StatusCode, Json<Value>)> {
    let id: u32 = id.trim().parse().map_err(|_| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a customer id: give the number on the customer's card"),
        )
    })?;
    read_sm(node, move |sm| accounts::customer(sm, id))
        .await?
        .map_err(|e| internal(format!("cannot read the state database: {e}")))?
        .ok_or_else(|| {
            bad(
                StatusCode::NOT_FOUND,
                format!("no customer {id} on this grid: check the id, or add the customer with POST /customer"),
            )
        })
}

/// `GET /customers/{id}`.
async fn customer_get(
    State(node): State<Node>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    let reply = read_customer(&node, &id).await?;
    serde_json::to_value(reply).map(Json).map_err(internal)
}

/// `GET /tariffs`: every tariff in force.
async fn tariffs(State(node): State<Node>) -> ApiResult {
    let reply = read_sm(&node, accounts::tariffs).await?;
    serde_json::to_value(reply).map(Json).map_err(internal)
}

/// `GET /ui/customers?q=C` (a lookup), or `?after=C&disconnected=1` (the list).
async fn customers_page(
    State(node): State<Node>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Page {
    let mut rest = Vec::new();
    let mut lookup = None;
    for pair in query.as_deref().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("q", v)) => lookup = Some(v.to_string()),
            _ if !pair.is_empty() => rest.push(pair),
            _ => {}
        }
    }
    let html = |s| Ok(axum::response::Html(s));
    if let Some(q) = lookup.filter(|q| !q.is_empty()) {
        return match read_customer(&node, &q).await {
            Ok(reply) => html(cockpit::accounts::customer(node.id(), &reply)),
            Err((_, Json(e))) => html(cockpit::accounts::no_customer(
                node.id(),
                e["error"].as_str().unwrap_or("not found"),
            )),
        };
    }
    let rest = rest.join("&");
    let q =
        accounts::CustomerQuery::parse(Some(&rest)).map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    let disconnected = q.disconnected_only;
    let reply = read_sm(&node, move |sm| accounts::customers(sm, &q)).await?;
    let status = node.status();
    html(cockpit::accounts::customers(
        node.id(),
        &reply,
        disconnected,
        (status.customers, status.disconnected),
    ))
}

/// `GET /ui/customers/{id}`.
async fn customer_page(
    State(node): State<Node>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Page {
    let page = match read_customer(&node, &id).await {
        Ok(reply) => cockpit::accounts::customer(node.id(), &reply),
        Err((_, Json(e))) => {
            cockpit::accounts::no_customer(node.id(), e["error"].as_str().unwrap_or("not found"))
        }
    };
    Ok(axum::response::Html(page))
}

/// `GET /ui/tariffs`.
async fn tariffs_page(State(node): State<Node>) -> Page {
    let reply = read_sm(&node, accounts::tariffs).await?;
    Ok(axum::response::Html(cockpit::accounts::tariffs(
        node.id(),
        &reply,
    )))
}

/// `GET /ui/alarms`: the newest committed alarms as a page.
async fn alarms_page(
    State(node): State<Node>,
    Extension(cockpit): Extension<cockpit::Cockpit>,
) -> Page {
    let reply = read_alarms(&node, cockpit::ALARMS_PAGE_ROWS).await?;
    Ok(axum::response::Html(cockpit::alarms(
        node.id(),
        &reply,
        cockpit.alarm_board(),
    )))
}

/// `GET /ui/events`: the event log.
async fn events_page(State(node): State<Node>) -> Page {
    let reply = read_events(&node, cockpit::EVENTS_PAGE_ROWS).await?;
    Ok(axum::response::Html(cockpit::events(node.id(), &reply)))
}

/// `GET /events?limit=N&since_ms=T`: the newest committed events (relay moves with reasons, ledger
/// lines, alarms), newest first.
async fn events(
    State(node): State<Node>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult {
    let q = dto::recent_query(query.as_deref()).map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    let mut reply = read_events(&node, q.limit).await?;
    if let Some(since) = q.since_ms {
        // Newest first: what is left after the first older one is older too.
        let before = reply.events.len();
        reply.events.retain(|x| x.time_ms >= since);
        if reply.events.len() < before {
            reply.limited = false;
            reply.whole_outbox = true;
        }
    }
    serde_json::to_value(reply)
        .map(Json)
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The newest `limit` committed events.
async fn read_events(
    node: &Node,
    limit: usize,
) -> Result<dto::EventsReply, (StatusCode, Json<Value>)> {
    // A read of up to ALARM_SCAN_RECORDS_MAX records: off the async workers.
    let sm = node.state_machine().clone();
    let found = tokio::task::spawn_blocking(move || sm.recent_outputs(limit, cockpit::is_event))
        .await
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the events from the state database: {e}"),
            )
        })?;
    Ok(dto::EventsReply {
        events: found.outputs.iter().map(dto::EventView::of).collect(),
        whole_outbox: found.whole_outbox,
        limited: found.limited,
    })
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(
    State(node): State<Node>,
    Extension(field): Extension<FieldView>,
) -> Result<impl axum::response::IntoResponse, (StatusCode, Json<Value>)> {
    let status = status_json(&node, &field)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            cockpit::metrics::CONTENT_TYPE,
        )],
        cockpit::metrics::render(&status),
    ))
}

/// The newest committed alarms (billing's refused reads, replayed tokens, unknown accounts;
/// balancing's shedding): `GET /alarms?limit=N&since_ms=T`, newest first.
async fn alarms(
    State(node): State<Node>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult {
    let q = dto::recent_query(query.as_deref()).map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    let mut reply = read_alarms(&node, q.limit).await?;
    if let Some(since) = q.since_ms {
        // Newest first: what is left after the first older one is older too.
        let before = reply.alarms.len();
        reply.alarms.retain(|x| x.time_ms >= since);
        if reply.alarms.len() < before {
            reply.limited = false;
            reply.whole_outbox = true;
        }
    }
    serde_json::to_value(reply)
        .map(Json)
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The newest `limit` committed alarms.
async fn read_alarms(
    node: &Node,
    limit: usize,
) -> Result<dto::AlarmsReply, (StatusCode, Json<Value>)> {
    // A read of up to ALARM_SCAN_RECORDS_MAX records: off the async workers.
    let sm = node.state_machine().clone();
    let found = tokio::task::spawn_blocking(move || sm.recent_alarms(limit))
        .await
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the alarms from the state database: {e}"),
            )
        })?;
    Ok(dto::AlarmsReply {
        active: dto::BoardAlarmView::all(node.state_machine().board_alarms()),
        alarms: found.alarms.iter().map(dto::AlarmView::of).collect(),
        whole_outbox: found.whole_outbox,
        limited: found.limited,
    })
}

async fn member(State(node): State<Node>, Json(op): Json<dto::MemberRequest>) -> ApiResult {
    let op = match op {
        dto::MemberRequest::Add { id, addr } => MemberOp::AddLearner { id, addr },
        dto::MemberRequest::Promote { id } => MemberOp::Promote { id },
        dto::MemberRequest::Remove { id } => MemberOp::Remove { id },
    };
    // Answered within the node's own limits (`node::membership`): committed, in progress or
    // unconfirmed with the membership the node knows; refused (409) with the reason; 503 when
    // no leader was found.
    match node.member(op).await {
        Ok(outcome) => serde_json::to_value(outcome)
            .map(Json)
            .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e @ MembershipError::NoLeader(_)) => {
            Err(bad(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Err(e) => Err(bad(StatusCode::CONFLICT, e.to_string())),
    }
}

/// Proposes one operator input and answers with what applying it did: 200 when the actor
/// took it, 422 with the actor's reason when it refused it or trapped (the entry is committed
/// either way, so retrying the same request cannot help).
async fn propose(node: &Node, input: sdk::Input) -> ApiResult {
    let bytes = sdk::codec::encode(&input);
    let receipt = node
        .propose_inputs(vec![bytes])
        .await
        .map_err(|e| bad(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    answer(receipt)
}

/// A receipt as the admin API answers it: 200 when taken, 422 with the reason when refused.
fn answer(receipt: crate::raft::Receipt) -> ApiResult {
    let body = json!({
        "index": receipt.index,
        "handled": receipt.handled,
        "rejected": receipt.rejected,
        "trapped": receipt.trapped,
        "duplicate": receipt.duplicate,
        "refusals": receipt.refusals.iter().map(|r| json!({
            "actor": r.actor.map(|a| a.name()),
            "code": r.code,
            "text": r.text,
        })).collect::<Vec<_>>(),
    });
    match refused(&receipt) {
        None => Ok(Json(body)),
        Some(why) => {
            let mut body = body;
            body["error"] = Value::String(why);
            Err((StatusCode::UNPROCESSABLE_ENTITY, Json(body)))
        }
    }
}

/// What to tell the operator when the actor did not take their input; `None` when it did.
fn refused(receipt: &crate::raft::Receipt) -> Option<String> {
    let index = receipt.index;
    if let Some(r) = receipt.refusals.first() {
        return Some(format!(
            "committed at index {index} but {r}; nothing was credited or changed by it: correct the request (customer, token, tariff) and send it again"
        ));
    }
    if receipt.rejected > 0 {
        return Some(format!(
            "committed at index {index} but refused by the actor; nothing was changed by it: correct the request and send it again"
        ));
    }
    if receipt.trapped > 0 {
        return Some(format!(
            "committed at index {index} but the actor trapped (a fuel or memory limit); nothing was changed: the node's log names the limit"
        ));
    }
    None
}

async fn topup(State(node): State<Node>, Json(t): Json<dto::TopUpRequest>) -> ApiResult {
    let input = t
        .into_input()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
    propose(&node, input).await
}

/// Credit by amount: the admin token (checked by the middleware) and the operator-credit
/// token in [`auth::CREDIT_HEADER`].
async fn operator_credit(
    State(node): State<Node>,
    Extension(auth): Extension<auth::AdminAuth>,
    headers: axum::http::HeaderMap,
    Json(c): Json<dto::OperatorCreditRequest>,
) -> ApiResult {
    let presented = headers
        .get(auth::CREDIT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if !presented.is_some_and(|t| auth.accepts_credit(t)) {
        return Err(bad(
            StatusCode::FORBIDDEN,
            format!(
                "credit by amount needs the operator-credit permission: send header {} with the token in {} (`ghatta credit` reads it itself); customers' credit comes as tokens (`ghatta topup --code`)",
                auth::CREDIT_HEADER,
                auth.credit_path().display()
            ),
        ));
    }
    let input = c
        .into_input()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
    propose(&node, input).await
}

async fn meter_replace(
    State(node): State<Node>,
    Json(r): Json<dto::MeterReplaceRequest>,
) -> ApiResult {
    propose(&node, r.into_input()).await
}

async fn tariff(State(node): State<Node>, Json(t): Json<dto::TariffRequest>) -> ApiResult {
    let input = t
        .into_input()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
    propose(&node, input).await
}

async fn customer(State(node): State<Node>, Json(c): Json<dto::CustomerRequest>) -> ApiResult {
    let input = c
        .into_input()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
    propose(&node, input).await
}

async fn billing_config(
    State(node): State<Node>,
    Json(c): Json<dto::BillingConfigRequest>,
) -> ApiResult {
    let input = c
        .into_input()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
    propose(&node, input).await
}

async fn balancing_config(
    State(node): State<Node>,
    Json(c): Json<dto::BalancingConfigRequest>,
) -> ApiResult {
    propose(&node, c.into_input()).await
}

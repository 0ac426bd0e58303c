//! vmnap's HTTP API, everything both ends share: the types it speaks (JSON under `/v1`,
//! described in `openapi.json` next to this crate's `Cargo.toml`), its small HTTP/1.1
//! codec ([`http`]) and the client that `vmnap` and the tests use ([`client`], whose calls
//! are re-exported here).
//!
//! The daemon serves the API on its unix socket (no token: the socket's mode decides who
//! may connect) and, where configured, on a TCP address, where every request must carry
//! `Authorization: Bearer TOKEN`. Its routes ([`ROUTES`]):
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/guests` | every guest's [`GuestStatus`], in config order |
//! | `GET /v1/guests/{name}` | one guest's [`GuestDetail`]: its status and its [`Policy`] |
//! | `POST /v1/guests/{name}/sleep`, `/wake` | [`Message`] once done ([`ActionBody`] `{"wait": false}`: 202 at once) |
//! | `POST /v1/guests/{name}/pin`, `/unpin` | [`Message`] |
//! | `POST /v1/reload` | [`Reloaded`]: the daemon reads its config file again |
//! | `GET /v1/log`, `PUT /v1/log` | the log filter, [`LogFilter`]; `PUT` sets it |
//! | `GET /v1/events` | newline-delimited [`Record`]s; `?follow=false` ends after the recent ones, `?guest=NAME` filters |
//! | `GET /metrics` | Prometheus text |
//! | `GET /` | the status page (HTML) |
//!
//! Refusals are a 4xx or 5xx with an [`ApiError`] body, `{"error": "..."}`.
//!
//! This crate does no I/O of its own beyond the client's socket, and knows nothing of the
//! daemon's insides: the daemon maps its state onto these types, never the other way round.

pub mod client;
mod event;
pub mod http;
mod types;

pub use client::{
    call, events, guest, log_filter, reload, request, request_waiting, status, ClientError,
    CLIENT_TIMEOUT, RELOAD_TIMEOUT,
};
pub use event::{Event, Record};
pub use types::*;

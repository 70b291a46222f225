//! Admin API for rooms: live state, pause, resume, runtime capacity and rate.
//!
//! `GET /admin/waiting-rooms/{name}`, `POST …/pause`, `POST …/resume`,
//! `POST …/settings` with `{"active_users": N, "new_users_per_minute": M}` (either
//! may be left out; values hold until the next config reload).

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;

use super::Room;

/// The admin path prefix for rooms.
pub const PREFIX: &str = "/admin/waiting-rooms/";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    active_users: Option<u64>,
    new_users_per_minute: Option<u64>,
}

/// The JSON view of a room.
pub fn view(room: &Room) -> serde_json::Value {
    let line = room.line();
    let est = room.estimate_stats();
    // Like the visitors' page: no expected wait while paused.
    let wait = line
        .expected_wait(line.waiting())
        .filter(|_| !line.paused)
        .map(|(low, high)| serde_json::json!({"low": low, "high": high}));
    serde_json::json!({
        "name": room.name,
        "mode": line.settings.mode.as_str(),
        "open": line.is_open(),
        "paused": line.paused,
        "waiting": line.waiting(),
        "active": line.active(),
        "passes": line.passes(),
        "revoked_passes": line.revoked(),
        "active_users": line.settings.active_users,
        "new_users_per_minute": line.settings.new_users_per_minute,
        "admitted_total": line.admitted_total,
        "tickets_issued_total": line.issued_total,
        "abandoned_skipped_total": line.skipped_total,
        "measured_rate_per_second": line.measured_rate(),
        "expected_wait_seconds": wait,
        "estimate_error_seconds": {
            "count": est.count,
            "mean": if est.count > 0 { est.sum / est.count as f64 } else { 0.0 },
            "mean_abs": if est.count > 0 { est.sum_abs / est.count as f64 } else { 0.0 },
        },
    })
}

/// Answers an admin request under [`PREFIX`]: status and JSON body.
pub fn handle(
    rooms: &[Arc<Room>],
    method: &Method,
    path: &str,
    body: &[u8],
) -> (StatusCode, String) {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(room) = rooms.iter().find(|r| r.name == name) else {
        return err(
            StatusCode::NOT_FOUND,
            format!("no waiting room named {name:?}"),
        );
    };
    match (method, action) {
        (&Method::GET, "") => {}
        (&Method::POST, "pause") => room.set_paused(true),
        (&Method::POST, "resume") => room.set_paused(false),
        (&Method::POST, "settings") => match serde_json::from_slice::<Settings>(body) {
            Ok(s) if s.active_users == Some(0) || s.new_users_per_minute == Some(0) => {
                return err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "values must be at least 1".into(),
                )
            }
            Ok(s) => room.set_limits(s.active_users, s.new_users_per_minute),
            Err(e) => return err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        },
        _ => return err(StatusCode::NOT_FOUND, format!("no action {action:?}")),
    }
    (StatusCode::OK, format!("{}\n", view(room)))
}

fn err(status: StatusCode, message: String) -> (StatusCode, String) {
    (
        status,
        format!("{}\n", serde_json::json!({"error": message})),
    )
}

//! What a reload did with a room: each changed key, applied to the line it keeps.

use super::config::RoomConfig;
use super::state::LineSettings;
use crate::reconfigure::{Changes, Outcome};

/// The changed keys of one room, then "line kept"; nothing when no key changed.
///
/// The rates are compared with `live`, what the line runs on now: a value set through
/// the admin API since the last reload is put back to the file's, and that is said.
pub(super) fn changes(old: &RoomConfig, live: &LineSettings, new: &RoomConfig) -> Changes {
    use Outcome::Applied;
    let mut c = Changes::of("waiting_room", &new.name);
    c.compare(
        "active_users",
        &live.active_users,
        &new.active_users,
        Applied,
    );
    c.compare(
        "new_users_per_minute",
        &live.new_users_per_minute,
        &new.new_users_per_minute,
        Applied,
    );
    c.compare(
        "session_duration",
        &old.session_duration,
        &new.session_duration,
        Applied,
    );
    c.compare("opens_at", &old.opens_at, &new.opens_at, Applied);
    c.compare("closes_at", &old.closes_at, &new.closes_at, Applied);
    c.compare("paths", &old.paths, &new.paths, Applied);
    c.compare(
        "exclude_paths",
        &old.exclude_paths,
        &new.exclude_paths,
        Applied,
    );
    c.compare("mode", &old.mode, &new.mode, Applied);
    c.compare(
        "waiting_status",
        &old.waiting_status,
        &new.waiting_status,
        Applied,
    );
    c.compare(
        "abandon_after",
        &old.abandon_after,
        &new.abandon_after,
        Applied,
    );
    c.compare("ticket_ttl", &old.ticket_ttl, &new.ticket_ttl, Applied);
    c.compare("state_dir", &old.state_dir, &new.state_dir, Applied);
    clients(&mut c, old, new);
    page(&mut c, old, new);
    if !c.is_empty() {
        c.say(Outcome::Kept("line kept"));
    }
    c
}

/// How clients are told apart and held to their share.
fn clients(c: &mut Changes, old: &RoomConfig, new: &RoomConfig) {
    use Outcome::Applied;
    c.compare(
        "tickets_per_minute_per_client",
        &old.tickets_per_minute_per_client,
        &new.tickets_per_minute_per_client,
        Applied,
    );
    c.compare(
        "client_prefix_ipv4",
        &old.client_prefix_ipv4,
        &new.client_prefix_ipv4,
        Applied,
    );
    c.compare(
        "client_prefix_ipv6",
        &old.client_prefix_ipv6,
        &new.client_prefix_ipv6,
        Applied,
    );
    c.compare(
        "pass_requests_per_second",
        &old.pass_requests_per_second,
        &new.pass_requests_per_second,
        Applied,
    );
    c.compare(
        "pass_prefixes_per_minute",
        &old.pass_prefixes_per_minute,
        &new.pass_prefixes_per_minute,
        Applied,
    );
}

/// The page, the signing keys and the proof of work: compiled values without
/// `PartialEq`, compared by their Debug form (the keys' shows their ids, never a secret).
fn page(c: &mut Changes, old: &RoomConfig, new: &RoomConfig) {
    use Outcome::Applied;
    c.compare_debug(
        "template, portal_name, logo_url",
        &old.template,
        &new.template,
        Applied,
    );
    c.compare_debug("key_file", &old.keys, &new.keys, Applied);
    c.compare_debug(
        "proof_of_work",
        &old.proof_of_work,
        &new.proof_of_work,
        Applied,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::waiting_room::{pow::ProofOfWork, Room, RoomConfig};

    fn room(config: RoomConfig) -> Arc<Room> {
        let families = crate::waiting_room::metrics::Families::register(&Default::default());
        Room::new(config.clone(), families.room(&config.name))
    }

    fn said(changes: crate::reconfigure::Changes) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_reload_puts_back_a_rate_set_through_the_admin_api_and_says_so() {
        let config = RoomConfig::new("sale", 100, 600);
        let room = room(config.clone());
        room.set_limits(Some(10), None);
        assert_eq!(
            said(room.reconfigure(config)),
            [
                "waiting_room.sale.active_users: applied",
                "waiting_room.sale: line kept"
            ]
        );
        assert_eq!(room.line().settings.active_users, 100);
    }

    #[test]
    fn unchanged_proof_of_work_keeps_its_used_challenges() {
        let mut config = RoomConfig::new("sale", 100, 600);
        config.proof_of_work = Some(Arc::new(ProofOfWork::new(15, None)));
        let room = room(config.clone());
        let before = room.config().proof_of_work.clone().unwrap();
        config.proof_of_work = Some(Arc::new(ProofOfWork::new(15, None)));
        assert!(said(room.reconfigure(config.clone())).is_empty());
        let after = room.config().proof_of_work.clone().unwrap();
        assert!(
            Arc::ptr_eq(&before, &after),
            "the same table of used challenges"
        );

        config.proof_of_work = Some(Arc::new(ProofOfWork::new(16, None)));
        assert_eq!(
            said(room.reconfigure(config))[0],
            "waiting_room.sale.proof_of_work: applied"
        );
    }
}

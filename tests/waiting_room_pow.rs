//! Proof of work before a ticket, end to end: a real gateway in front of the simulated
//! shop, real HTTP clients; the solver is the crate's own (the page's script does the
//! same with Web Crypto, see tests/waiting_room_browser.rs).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use floodgate::waiting_room::pow;
use http::Request;
use http_body_util::Full;

const KEY: &str = "a test signing key of enough bytes";

/// The shop behind room "sale" with one place inside, signed with KEY, and `room`'s
/// extra keys.
fn room_config(shop: SocketAddr, room: &str) -> (String, tempfile::NamedTempFile) {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), format!("{KEY}\n")).unwrap();
    let text = config_text(
        shop,
        &format!(
            "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
             [[waiting_room]]\nname = \"sale\"\nkey_file = \"{}\"\nactive_users = 1\n\
             new_users_per_minute = 600\n{room}\n",
            key.path().display()
        ),
    );
    (text, key)
}

/// `GET /products/1` with these headers.
async fn visit(addr: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(format!("http://{addr}/products/1"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::<Bytes>::default()).unwrap()).await
}

fn sets_cookie(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c[name.len() + 1..].split(';').next().unwrap().to_string())
}

const JSON: (&str, &str) = ("accept", "application/json");

#[tokio::test]
async fn without_a_solution_a_visitor_gets_no_ticket_and_with_one_gets_a_ticket() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "proof_of_work = { difficulty = 10, no_script_delay = \"off\" }",
    );
    let gw = gateway(&text).await;

    // Without a solution: the challenge, no ticket, no pass, nothing at the origin.
    let ask = visit(gw.addr(), &[JSON]).await;
    assert_eq!(ask.header("cache-control"), Some("no-store"));
    let j = ask.json();
    assert_eq!(j["state"], "challenge");
    assert_eq!(j["ticket"], serde_json::Value::Null);
    assert_eq!(j["challenge"]["difficulty_bits"], 10);
    assert_eq!(sets_cookie(&ask, "fg_ticket_sale"), None);
    assert_eq!(sets_cookie(&ask, "fg_pass_sale"), None);
    assert_eq!(shop.stats.path_count("/products/1"), 0);

    // Solved: the first visitor goes straight in (the room has a free place).
    let solution = pow::solve(j["challenge"]["value"].as_str().unwrap()).unwrap();
    let inside = visit(gw.addr(), &[("x-floodgate-pow", &solution)]).await;
    assert!(inside.text().contains("Product 1"), "{}", inside.text());
    assert!(sets_cookie(&inside, "fg_pass_sale").is_some());
    assert_eq!(shop.stats.path_count("/products/1"), 1);

    // The room is full now. A wrong nonce, or the first visitor's solution replayed,
    // still gets only the challenge.
    let c = visit(gw.addr(), &[JSON]).await.json()["challenge"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let good = pow::solve(&c).unwrap();
    let n: u64 = good.rsplit_once('.').unwrap().1.parse().unwrap();
    let wrong = format!("{c}.{}", n + 1);
    let wrong_ok = pow::leading_zero_bits(&sha256(&wrong)) >= 10;
    for (what, answer) in [("replayed", solution.as_str()), ("wrong nonce", &wrong)] {
        if what == "wrong nonce" && wrong_ok {
            continue; // n + 1 happens to solve it too (one chance in 1024)
        }
        let a = visit(gw.addr(), &[JSON, ("x-floodgate-pow", answer)]).await;
        assert_eq!(a.json()["state"], "challenge", "{what}");
        assert_eq!(sets_cookie(&a, "fg_ticket_sale"), None, "{what}");
    }
    // The cookie the page's script writes works like the header: a ticket, place 1.
    let cookie = format!("{}={good}", pow::cookie_name("sale"));
    let waiting = visit(gw.addr(), &[JSON, ("cookie", &cookie)]).await;
    let w = waiting.json();
    assert_eq!(w["state"], "waiting", "{w}");
    assert_eq!(w["position"], 1);
    assert_eq!(w["ahead_at_arrival"], 0);
    assert!(sets_cookie(&waiting, "fg_ticket_sale").is_some());
    assert_eq!(
        shop.stats.path_count("/products/1"),
        1,
        "the origin saw one visitor"
    );
}

fn sha256(s: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}

#[tokio::test]
async fn a_visitor_without_javascript_gets_a_ticket_after_the_no_script_delay_once() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "proof_of_work = { difficulty = 24, no_script_delay = \"1s\" }",
    );
    let gw = gateway(&text).await;
    let first = visit(gw.addr(), &[("accept", "text/html")]).await;
    let page = first.text();
    assert!(page.contains("data-state=\"challenge\""), "{page}");
    assert!(
        page.contains("http-equiv=\"refresh\" content=\"2\""),
        "{page}"
    );
    assert!(page.contains("in 1 seconds") || page.contains("in 1 second"));
    let claim = sets_cookie(&first, &pow::cookie_name("sale")).expect("the no-script claim");
    let cookie = format!("{}={claim}", pow::cookie_name("sale"));

    // Back too early (a script that does not wait): still the challenge, no ticket.
    let early = visit(gw.addr(), &[JSON, ("cookie", &cookie)]).await;
    assert_eq!(early.json()["state"], "challenge");
    assert_eq!(sets_cookie(&early, "fg_ticket_sale"), None);

    // After the delay, what the meta refresh brings back: a place (the first one goes
    // straight in).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = visit(gw.addr(), &[("cookie", &cookie)]).await;
    assert!(later.text().contains("Product 1"), "{}", later.text());
    // Once: the same claim from another client is a challenge again.
    let again = visit(gw.addr(), &[JSON, ("cookie", &cookie)]).await;
    assert_eq!(again.json()["state"], "challenge");
    assert_eq!(shop.stats.path_count("/products/1"), 1);
}

#[tokio::test]
async fn without_proof_of_work_configured_a_visitor_gets_a_ticket_at_once() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(shop.addr, "");
    let gw = gateway(&text).await;
    let first = visit(gw.addr(), &[]).await;
    assert!(first.text().contains("Product 1"));
    let second = visit(gw.addr(), &[JSON]).await;
    assert_eq!(second.json()["state"], "waiting");
    assert!(sets_cookie(&second, "fg_ticket_sale").is_some());
}

#[tokio::test]
async fn proof_of_work_config_errors_name_their_keys() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "proof_of_work = { difficulty = 99, no_script_delay = \"soon\" }\nlogo_url = \"javascript:x\"",
    );
    let errors = floodgate::config::parse(&text).unwrap_err();
    let keys: Vec<String> = errors.iter().map(|e| e.key.clone()).collect();
    for k in [
        "waiting_room[0].proof_of_work.difficulty",
        "waiting_room[0].proof_of_work.no_script_delay",
        "waiting_room[0].logo_url",
    ] {
        assert!(keys.iter().any(|e| e == k), "{k} in {keys:?}");
    }
}

//! The registered plugin set is exactly the built-in one, without duplicate
//! names (a plugin crate that is not named by the binary would silently
//! vanish from this list).

use gerdu_api::plugin::{Kind, registered};

#[test]
fn registered_plugins_are_exactly_the_built_in_set() {
    // Link the core (which names every built-in plugin crate).
    let built_in = gerdu::plugins::BUILT_IN;
    for (kind, label) in [(Kind::Protocol, "protocol"), (Kind::Policy, "policy"), (Kind::Middleware, "middleware")] {
        let names: Vec<&str> = registered(kind).into_iter().map(|(n, _)| n).collect();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup, "duplicate {label} names");
        let expected = built_in.iter().find(|(k, _)| *k == label).unwrap().1;
        assert_eq!(names, expected, "{label} plugins");
        for (name, description) in registered(kind) {
            assert!(!description.is_empty(), "{label} {name} has a description");
        }
    }
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let e = gerdu_api::plugin::find_policy("nope").err().unwrap();
    assert_eq!(e.to_string(), "unknown policy \"nope\"; registered: lfu, lru, s3fifo, weak, wtinylfu");
    let e = gerdu_api::plugin::find_protocol("smtp").err().unwrap();
    assert_eq!(e.to_string(), "unknown protocol \"smtp\"; registered: grpc, http, mcd, redis");
}

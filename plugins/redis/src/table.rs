//! The command table: name, arity and key positions as Redis reports them in
//! `COMMAND`, plus a group and summary for `COMMAND DOCS`. Arity follows
//! Redis: positive = exactly that many arguments (the name included),
//! negative = at least that many.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Which file of [`crate::commands`] handles a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// [`crate::commands::connection`]
    Connection,
    /// [`crate::commands::server`]
    Server,
    /// [`crate::commands::strings`]
    Strings,
    /// [`crate::commands::keyspace`]
    Keyspace,
}

/// One command's metadata.
#[derive(Debug)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity.
    pub arity: i32,
    /// Flags as `COMMAND INFO` lists them.
    pub flags: &'static [&'static str],
    /// First key position (0 = none).
    pub first_key: i32,
    /// Last key position (-1 = last argument).
    pub last_key: i32,
    /// Step between keys.
    pub step: i32,
    /// `COMMAND DOCS` group.
    pub group: &'static str,
    /// `COMMAND DOCS` summary.
    pub summary: &'static str,
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const WR: &[&str] = &["write"];
const WFR: &[&str] = &["write", "fast"];
const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const C: &[&str] = &["noscript", "loading", "stale", "fast"];
const A: &[&str] = &["admin", "noscript", "loading", "stale"];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $first:expr, $last:expr, $step:expr, $group:literal, $summary:literal) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            step: $step,
            group: $group,
            summary: $summary,
        }
    };
}

/// Every command gerdu serves.
pub static COMMANDS: &[Spec] = &[
    // connection
    spec!("ping", -1, C, 0, 0, 0, "connection", "Returns the server's liveliness response."),
    spec!("echo", 2, C, 0, 0, 0, "connection", "Returns the given string."),
    spec!("quit", -1, C, 0, 0, 0, "connection", "Closes the connection."),
    spec!("hello", -1, C, 0, 0, 0, "connection", "Handshakes with the Redis server."),
    spec!("auth", -2, C, 0, 0, 0, "connection", "Authenticates the connection."),
    spec!("select", 2, C, 0, 0, 0, "connection", "Changes the selected database (only 0 exists)."),
    spec!("client", -2, C, 0, 0, 0, "connection", "A container for client connection commands."),
    spec!("reset", 1, C, 0, 0, 0, "connection", "Resets the connection."),
    // server
    spec!("command", -1, C, 0, 0, 0, "server", "Returns detailed information about all commands."),
    spec!("info", -1, C, 0, 0, 0, "server", "Returns information and statistics about the server."),
    spec!("dbsize", 1, RF, 0, 0, 0, "server", "Returns the number of keys in the database."),
    spec!("flushdb", -1, WR, 0, 0, 0, "server", "Removes all keys from the current database."),
    spec!("flushall", -1, WR, 0, 0, 0, "server", "Removes all keys from all databases."),
    spec!("time", 1, C, 0, 0, 0, "server", "Returns the server time."),
    spec!("config", -2, A, 0, 0, 0, "server", "A container for server configuration commands."),
    // strings
    spec!("get", 2, RF, 1, 1, 1, "string", "Returns the string value of a key."),
    spec!("set", -3, W, 1, 1, 1, "string", "Sets the string value of a key."),
    spec!("setnx", 3, WF, 1, 1, 1, "string", "Set the string value of a key only when the key doesn't exist."),
    spec!("setex", 4, W, 1, 1, 1, "string", "Sets the string value and expiration time of a key."),
    spec!("psetex", 4, W, 1, 1, 1, "string", "Sets the string value and expiration time in milliseconds of a key."),
    spec!(
        "getset",
        3,
        WF,
        1,
        1,
        1,
        "string",
        "Returns the previous string value of a key after setting it to a new value."
    ),
    spec!("getdel", 2, WFR, 1, 1, 1, "string", "Returns the string value of a key after deleting the key."),
    spec!("getex", -2, WFR, 1, 1, 1, "string", "Returns the string value of a key after setting its expiration time."),
    spec!("mget", -2, RF, 1, -1, 1, "string", "Atomically returns the string values of one or more keys."),
    spec!("mset", -3, W, 1, -1, 2, "string", "Atomically creates or modifies the string values of one or more keys."),
    spec!("msetnx", -3, W, 1, -1, 2, "string", "Atomically sets multiple keys only when none of them exists."),
    spec!("incr", 2, WF, 1, 1, 1, "string", "Increments the integer value of a key by one."),
    spec!("decr", 2, WF, 1, 1, 1, "string", "Decrements the integer value of a key by one."),
    spec!("incrby", 3, WF, 1, 1, 1, "string", "Increments the integer value of a key by a number."),
    spec!("decrby", 3, WF, 1, 1, 1, "string", "Decrements a number from the integer value of a key."),
    spec!("incrbyfloat", 3, WF, 1, 1, 1, "string", "Increment the floating point value of a key by a number."),
    spec!("append", 3, WF, 1, 1, 1, "string", "Appends a string to the value of a key."),
    spec!("strlen", 2, RF, 1, 1, 1, "string", "Returns the length of a string value."),
    spec!("getrange", 4, R, 1, 1, 1, "string", "Returns a substring of the string stored at a key."),
    spec!("substr", 4, R, 1, 1, 1, "string", "Returns a substring from a string value."),
    spec!("setrange", 4, W, 1, 1, 1, "string", "Overwrites a part of a string value with another by an offset."),
    // keyspace
    spec!("del", -2, WR, 1, -1, 1, "generic", "Deletes one or more keys."),
    spec!("unlink", -2, WFR, 1, -1, 1, "generic", "Asynchronously deletes one or more keys."),
    spec!("exists", -2, RF, 1, -1, 1, "generic", "Determines whether one or more keys exist."),
    spec!("type", 2, RF, 1, 1, 1, "generic", "Determines the type of value stored at a key."),
    spec!("expire", -3, WFR, 1, 1, 1, "generic", "Sets the expiration time of a key in seconds."),
    spec!("pexpire", -3, WFR, 1, 1, 1, "generic", "Sets the expiration time of a key in milliseconds."),
    spec!("expireat", -3, WFR, 1, 1, 1, "generic", "Sets the expiration time of a key to a Unix timestamp."),
    spec!(
        "pexpireat",
        -3,
        WFR,
        1,
        1,
        1,
        "generic",
        "Sets the expiration time of a key to a Unix milliseconds timestamp."
    ),
    spec!("ttl", 2, RF, 1, 1, 1, "generic", "Returns the expiration time in seconds of a key."),
    spec!("pttl", 2, RF, 1, 1, 1, "generic", "Returns the expiration time in milliseconds of a key."),
    spec!("expiretime", 2, RF, 1, 1, 1, "generic", "Returns the expiration time of a key as a Unix timestamp."),
    spec!(
        "pexpiretime",
        2,
        RF,
        1,
        1,
        1,
        "generic",
        "Returns the expiration time of a key as a Unix milliseconds timestamp."
    ),
    spec!("persist", 2, WFR, 1, 1, 1, "generic", "Removes the expiration time of a key."),
    spec!(
        "touch",
        -2,
        RF,
        1,
        -1,
        1,
        "generic",
        "Returns the number of existing keys out of those specified after updating the time they were last accessed."
    ),
    spec!("keys", 2, R, 0, 0, 0, "generic", "Returns all key names that match a pattern."),
    spec!("scan", -2, R, 0, 0, 0, "generic", "Iterates over the key names in the database."),
    spec!("randomkey", 1, R, 0, 0, 0, "generic", "Returns a random key name from the database."),
    spec!("rename", 3, WR, 1, 2, 1, "generic", "Renames a key and overwrites the destination."),
    spec!("renamenx", 3, WFR, 1, 2, 1, "generic", "Renames a key only when the target key name doesn't exist."),
    spec!("copy", -3, W, 1, 2, 1, "generic", "Copies the value of a key to a new key."),
];

impl Spec {
    /// The file that handles the command.
    pub fn family(&self) -> Family {
        match self.group {
            "connection" => Family::Connection,
            "server" => Family::Server,
            "string" => Family::Strings,
            _ => Family::Keyspace,
        }
    }
}

/// Name → index into [`COMMANDS`], built once. A hash lookup instead of a
/// scan: this runs for every request.
type Index = HashMap<&'static [u8], (usize, Family), foldhash::fast::FixedState>;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| COMMANDS.iter().enumerate().map(|(i, s)| (s.name.as_bytes(), (i, s.family()))).collect())
}

/// The commands nearly every request is, `GET` and `SET`.
const HOT: [&[u8]; 2] = [b"get", b"set"];

/// The name `name` spells when it is one of the [`HOT`] commands, in any
/// case, as a static string: the table compares them before it hashes a
/// name, and the parser hands them out without a slice of the read buffer.
#[inline]
pub fn hot_name(name: &[u8]) -> Option<&'static [u8]> {
    // `| 0x20` lower-cases a letter, and only `G`/`g` (`S`/`s`) become `g` (`s`).
    let &[first, b'e' | b'E', b't' | b'T'] = name else { return None };
    match first | 0x20 {
        b'g' => Some(HOT[0]),
        b's' => Some(HOT[1]),
        _ => None,
    }
}

/// The position in [`COMMANDS`] and family of a command name, in any case.
/// The [`HOT`] ones are compared before the others are hashed.
pub fn lookup(name: &[u8]) -> Option<(usize, Family)> {
    static FOUND: OnceLock<[(usize, Family); 2]> = OnceLock::new();
    if let Some(hot) = hot_name(name) {
        return Some(FOUND.get_or_init(|| HOT.map(|n| index()[n]))[usize::from(hot == HOT[1])]);
    }
    let mut buf = [0u8; 24];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    index().get(&*lower).copied()
}

/// The spec of a command name, in any case.
pub fn find(name: &[u8]) -> Option<&'static Spec> {
    lookup(name).map(|(i, _)| &COMMANDS[i])
}

/// Whether `argc` arguments (the name included) fit the arity.
pub fn arity_ok(spec: &Spec, argc: usize) -> bool {
    let argc = argc as i32;
    if spec.arity >= 0 { argc == spec.arity } else { argc >= -spec.arity }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut names: Vec<_> = COMMANDS.iter().map(|s| s.name).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase())));
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn lookup_ignores_case_and_knows_families() {
        assert_eq!(lookup(b"GeT").map(|(i, f)| (COMMANDS[i].name, f)), Some(("get", Family::Strings)));
        assert_eq!(lookup(b"PING").map(|(_, f)| f), Some(Family::Connection));
        assert_eq!(lookup(b"dbsize").map(|(_, f)| f), Some(Family::Server));
        assert_eq!(lookup(b"Expire").map(|(_, f)| f), Some(Family::Keyspace));
        assert_eq!(lookup(b"hset"), None);
        assert_eq!(lookup(&[b'x'; 100]), None);
    }

    #[test]
    fn every_three_letter_name_is_found_as_the_hash_finds_it() {
        // GET and SET take the compare-first path; the other three-letter
        // names (and near misses) must still reach the hash.
        for name in COMMANDS.iter().map(|s| s.name).filter(|n| n.len() == 3).chain(["gex", "sat", "g\0t"]) {
            for case in [name.to_string(), name.to_ascii_uppercase()] {
                let hashed = index().get(name.as_bytes()).copied();
                assert_eq!(lookup(case.as_bytes()), hashed, "{case}");
            }
        }
        assert_eq!(lookup(b"SET").map(|(i, _)| COMMANDS[i].name), Some("set"));
        assert_eq!(lookup(b"gET").map(|(i, _)| COMMANDS[i].name), Some("get"));
        // Letters only fold: '@' is not a capital '`'.
        assert_eq!(lookup(b"G@T"), None);
    }

    #[test]
    fn arity() {
        assert!(arity_ok(find(b"get").unwrap(), 2));
        assert!(!arity_ok(find(b"get").unwrap(), 3));
        assert!(arity_ok(find(b"set").unwrap(), 5));
        assert!(!arity_ok(find(b"set").unwrap(), 2));
    }
}

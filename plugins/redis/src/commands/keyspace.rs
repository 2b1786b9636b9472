//! Keyspace commands: DEL, UNLINK, EXISTS, TYPE, EXPIRE, PEXPIRE, EXPIREAT,
//! PEXPIREAT (NX/XX/GT/LT), TTL, PTTL, EXPIRETIME, PEXPIRETIME, PERSIST,
//! TOUCH, KEYS, SCAN (MATCH, COUNT, TYPE), RANDOMKEY, RENAME, RENAMENX, COPY.
//! gerdu holds strings only, so `TYPE` answers `string` or `none`.

use bytes::Bytes;
use gerdu_api::{Command, ExpireCondition, Expiry};

use super::{Action, Render, int_arg, is, not_integer, syntax_error, take, take_from};
use crate::codec::Out;

fn expire(name: &str, args: &mut [Bytes], out: &mut Out<'_>) -> Action {
    let Some(n) = int_arg(&args[2]) else {
        not_integer(out);
        return Action::Local;
    };
    let (unit, absolute) = match name {
        "expire" => (1000, false),
        "pexpire" => (1, false),
        "expireat" => (1000, true),
        _ => (1, true),
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in &args[3..] {
        if is(a, "nx") {
            nx = true;
        } else if is(a, "xx") {
            xx = true;
        } else if is(a, "gt") {
            gt = true;
        } else if is(a, "lt") {
            lt = true;
        } else {
            out.error(&format!("ERR Unsupported option {}", String::from_utf8_lossy(a)));
            return Action::Local;
        }
    }
    if nx && (xx || gt || lt) {
        out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return Action::Local;
    }
    if gt && lt {
        out.error("ERR GT and LT options at the same time are not compatible");
        return Action::Local;
    }
    let condition = if nx {
        ExpireCondition::IfNone
    } else if gt {
        ExpireCondition::IfGreater
    } else if lt {
        ExpireCondition::IfLess
    } else if xx {
        ExpireCondition::IfSome
    } else {
        ExpireCondition::Always
    };
    // A deadline at or before now deletes the key (Redis semantics).
    let expiry = if n <= 0 {
        Expiry::At(1)
    } else {
        match (n as u64).checked_mul(unit).filter(|&ms| ms <= i64::MAX as u64) {
            Some(ms) if absolute => Expiry::At(ms),
            Some(ms) => Expiry::In(ms),
            None => {
                out.error(&format!("ERR invalid expire time in '{name}' command"));
                return Action::Local;
            }
        }
    };
    Action::Remote(Command::Touch { key: take(args, 1), expiry, condition }, Render::Bool)
}

fn scan(args: &[Bytes], out: &mut Out<'_>) -> Action {
    let Some(cursor) = std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<u64>().ok()) else {
        out.error("ERR invalid cursor");
        return Action::Local;
    };
    let (mut pattern, mut count, mut none) = (None, 10usize, false);
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            syntax_error(out);
            return Action::Local;
        };
        if is(&args[i], "match") {
            pattern = Some(value.clone());
        } else if is(&args[i], "count") {
            match int_arg(value) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => {
                    syntax_error(out);
                    return Action::Local;
                }
                None => {
                    not_integer(out);
                    return Action::Local;
                }
            }
        } else if is(&args[i], "type") {
            none = !is(value, "string");
        } else {
            syntax_error(out);
            return Action::Local;
        }
        i += 2;
    }
    Action::Remote(Command::Scan { cursor, pattern, count }, Render::Scan { none })
}

/// Dispatches a keyspace command (arity already checked).
pub fn dispatch(name: &str, args: &mut [Bytes], out: &mut Out<'_>) -> Action {
    match name {
        "del" | "unlink" => Action::Remote(Command::Delete { keys: take_from(args, 1) }, Render::Int),
        "exists" => Action::Remote(Command::Exists { keys: take_from(args, 1) }, Render::Int),
        "type" => Action::Remote(Command::Exists { keys: vec![take(args, 1)] }, Render::Type),
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire(name, args, out),
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
            let ms = name.starts_with('p');
            let absolute = name.ends_with("time");
            Action::Remote(Command::Ttl { key: take(args, 1) }, Render::Ttl { ms, absolute })
        }
        "persist" => Action::Remote(
            Command::Touch { key: take(args, 1), expiry: Expiry::Never, condition: ExpireCondition::Always },
            Render::Bool,
        ),
        "touch" => Action::Remote(Command::Get { keys: take_from(args, 1) }, Render::Found),
        "keys" => {
            Action::Remote(Command::Scan { cursor: 0, pattern: Some(take(args, 1)), count: usize::MAX }, Render::Keys)
        }
        "scan" => scan(args, out),
        "randomkey" => Action::Remote(Command::RandomKey, Render::Key),
        "rename" | "renamenx" => {
            let nx = name == "renamenx";
            let cmd = Command::Rename { from: take(args, 1), to: take(args, 2), only_if_absent: nx };
            Action::Remote(cmd, if nx { Render::Bool } else { Render::Ok })
        }
        "copy" => {
            let mut replace = false;
            let mut i = 3;
            while i < args.len() {
                if is(&args[i], "replace") {
                    replace = true;
                } else if is(&args[i], "db") && i + 1 < args.len() {
                    if int_arg(&args[i + 1]) != Some(0) {
                        out.error("ERR DB index is out of range");
                        return Action::Local;
                    }
                    i += 1;
                } else {
                    syntax_error(out);
                    return Action::Local;
                }
                i += 1;
            }
            Action::Remote(Command::Copy { from: take(args, 1), to: take(args, 2), replace }, Render::Bool)
        }
        _ => {
            out.error("ERR unknown command");
            Action::Local
        }
    }
}

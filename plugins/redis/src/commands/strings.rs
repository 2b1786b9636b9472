//! String commands: GET, SET (EX, PX, EXAT, PXAT, NX, XX, KEEPTTL, GET),
//! SETNX, SETEX, PSETEX, GETSET, GETDEL, GETEX, MGET, MSET, MSETNX, INCR,
//! DECR, INCRBY, DECRBY, INCRBYFLOAT, APPEND, STRLEN, GETRANGE (SUBSTR),
//! SETRANGE. Each write is one command-model operation, so read-modify-write
//! commands are atomic and replicated.

use bytes::Bytes;
use gerdu_api::exec::MAX_VALUE_LEN;
use gerdu_api::{Command, Condition, Delta, Expiry, SetCommand};

use super::{Action, Render, arity_error, int_arg, is, not_integer, syntax_error, take, take_from};
use crate::codec::Out;

/// Parses an expiry argument: `unit_ms` per unit, absolute or relative.
/// Errors are Redis' texts for command `cmd`.
pub fn expiry_arg(arg: &[u8], unit_ms: u64, absolute: bool, cmd: &str) -> Result<Expiry, String> {
    let n = int_arg(arg).ok_or_else(|| "ERR value is not an integer or out of range".to_string())?;
    let invalid = || format!("ERR invalid expire time in '{cmd}' command");
    if n <= 0 {
        return Err(invalid());
    }
    let ms = (n as u64).checked_mul(unit_ms).filter(|&ms| ms <= i64::MAX as u64).ok_or_else(invalid)?;
    Ok(if absolute { Expiry::At(ms) } else { Expiry::In(ms) })
}

/// Parses `EX s | PX ms | EXAT s | PXAT ms` at `args[i]`; returns the expiry.
fn expiry_option(args: &[Bytes], i: usize, cmd: &str) -> Option<Result<Expiry, String>> {
    let (unit, absolute) = if is(&args[i], "ex") {
        (1000, false)
    } else if is(&args[i], "px") {
        (1, false)
    } else if is(&args[i], "exat") {
        (1000, true)
    } else if is(&args[i], "pxat") {
        (1, true)
    } else {
        return None;
    };
    Some(match args.get(i + 1) {
        Some(v) => expiry_arg(v, unit, absolute, cmd),
        None => Err("ERR syntax error".into()),
    })
}

fn set(args: &mut [Bytes], out: &mut Out<'_>) -> Action {
    let mut cmd = SetCommand::new(take(args, 1), take(args, 2));
    let (mut cond, mut expiry, mut get) = (None, None, false);
    let mut i = 3;
    while i < args.len() {
        let a = &args[i];
        if is(a, "nx") && cond.is_none() {
            cond = Some(Condition::IfAbsent);
        } else if is(a, "xx") && cond.is_none() {
            cond = Some(Condition::IfPresent);
        } else if is(a, "get") && !get {
            get = true;
        } else if is(a, "keepttl") && expiry.is_none() {
            expiry = Some(Expiry::Keep);
        } else if expiry.is_none()
            && let Some(e) = expiry_option(args, i, "set")
        {
            match e {
                Ok(e) => expiry = Some(e),
                Err(msg) => {
                    out.error(&msg);
                    return Action::Local;
                }
            }
            i += 1;
        } else {
            syntax_error(out);
            return Action::Local;
        }
        i += 1;
    }
    cmd.condition = cond.unwrap_or(Condition::Always);
    cmd.expiry = expiry.unwrap_or(Expiry::Never);
    cmd.return_old = get;
    Action::Remote(Command::Set(cmd), Render::Set { get })
}

fn incr(key: Bytes, by: i64) -> Action {
    Action::Remote(Command::Incr { key, delta: Delta::Signed(by) }, Render::Number)
}

/// Dispatches a string command (arity already checked).
pub fn dispatch(name: &str, args: &mut [Bytes], out: &mut Out<'_>) -> Action {
    match name {
        "get" => Action::Remote(Command::Get { keys: vec![take(args, 1)] }, Render::Bulk),
        "set" => set(args, out),
        "setnx" => {
            let mut s = SetCommand::new(take(args, 1), take(args, 2));
            s.condition = Condition::IfAbsent;
            Action::Remote(Command::Set(s), Render::StoredInt)
        }
        "setex" | "psetex" => {
            let unit = if name == "setex" { 1000 } else { 1 };
            match expiry_arg(&args[2], unit, false, name) {
                Ok(expiry) => {
                    let mut s = SetCommand::new(take(args, 1), take(args, 3));
                    s.expiry = expiry;
                    Action::Remote(Command::Set(s), Render::Ok)
                }
                Err(msg) => {
                    out.error(&msg);
                    Action::Local
                }
            }
        }
        "getset" => {
            let mut s = SetCommand::new(take(args, 1), take(args, 2));
            s.return_old = true;
            Action::Remote(Command::Set(s), Render::Old)
        }
        "getdel" => Action::Remote(Command::GetDelete { key: take(args, 1) }, Render::ValueBulk),
        "getex" => {
            let expiry = match args.len() {
                2 => None,
                3 if is(&args[2], "persist") => Some(Ok(Expiry::Never)),
                4 => expiry_option(args, 2, "getex"),
                _ => None,
            };
            match (args.len(), expiry) {
                (2, _) => Action::Remote(Command::Get { keys: vec![take(args, 1)] }, Render::Bulk),
                (_, Some(Ok(expiry))) => {
                    Action::Remote(Command::GetAndTouch { keys: vec![take(args, 1)], expiry }, Render::Bulk)
                }
                (_, Some(Err(msg))) => {
                    out.error(&msg);
                    Action::Local
                }
                (_, None) => {
                    syntax_error(out);
                    Action::Local
                }
            }
        }
        "mget" => Action::Remote(Command::Get { keys: take_from(args, 1) }, Render::Array),
        "mset" | "msetnx" => {
            if args.len().is_multiple_of(2) {
                arity_error(out, name);
                return Action::Local;
            }
            let items = args[1..].chunks_exact_mut(2).map(|kv| SetCommand::new(take(kv, 0), take(kv, 1))).collect();
            let nx = name == "msetnx";
            let render = if nx { Render::Bool } else { Render::Ok };
            Action::Remote(Command::SetMany { items, only_if_none_exist: nx }, render)
        }
        "incr" => incr(take(args, 1), 1),
        "decr" => incr(take(args, 1), -1),
        "incrby" | "decrby" => match int_arg(&args[2]) {
            None => {
                not_integer(out);
                Action::Local
            }
            Some(n) if name == "decrby" && n == i64::MIN => {
                out.error("ERR decrement would overflow");
                Action::Local
            }
            Some(n) => incr(take(args, 1), if name == "decrby" { -n } else { n }),
        },
        "incrbyfloat" => {
            let by = std::str::from_utf8(&args[2]).ok().and_then(|s| s.parse::<f64>().ok()).filter(|f| f.is_finite());
            match by {
                Some(by) => {
                    Action::Remote(Command::Incr { key: take(args, 1), delta: Delta::Float(by) }, Render::Number)
                }
                None => {
                    out.error("ERR value is not a valid float");
                    Action::Local
                }
            }
        }
        "append" => Action::Remote(
            Command::Append {
                key: take(args, 1),
                value: take(args, 2),
                prepend: false,
                create: Some(Expiry::Never),
                cas: None,
            },
            Render::Int,
        ),
        "strlen" => Action::Remote(Command::Get { keys: vec![take(args, 1)] }, Render::Strlen),
        "getrange" | "substr" => match (int_arg(&args[2]), int_arg(&args[3])) {
            (Some(s), Some(e)) => Action::Remote(Command::Get { keys: vec![take(args, 1)] }, Render::Range(s, e)),
            _ => {
                not_integer(out);
                Action::Local
            }
        },
        "setrange" => match int_arg(&args[2]) {
            None => {
                not_integer(out);
                Action::Local
            }
            Some(o) if o < 0 => {
                out.error("ERR offset is out of range");
                Action::Local
            }
            Some(o) if o as u64 + args[3].len() as u64 > MAX_VALUE_LEN as u64 => {
                out.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
                Action::Local
            }
            Some(o) => Action::Remote(
                Command::SetRange { key: take(args, 1), offset: o as u64, value: take(args, 3) },
                Render::Int,
            ),
        },
        _ => {
            out.error("ERR unknown command");
            Action::Local
        }
    }
}

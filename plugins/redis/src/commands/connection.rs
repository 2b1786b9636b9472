//! Connection commands: PING, ECHO, SELECT, CLIENT (ID, SETNAME, GETNAME,
//! SETINFO, LIST, INFO), and the barriers AUTH, HELLO, RESET, QUIT.
//!
//! `AUTH` checks the credentials with the pipeline's auth middleware (an
//! empty request carrying them), so Redis clients log in as the same users
//! HTTP clients do; `AUTH password` is user `default` or `auth.requirepass`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use gerdu_api::{Credentials, PipelineError};

use super::{Action, arity_error, int_arg, is, not_integer, syntax_error};
use crate::codec::Out;
use crate::conn::ConnState;

/// A connection-changing command.
pub enum Barrier {
    /// `AUTH [user] password`.
    Auth {
        /// User, if given.
        user: Option<Bytes>,
        /// Password.
        password: Bytes,
    },
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    Hello {
        /// Protocol version asked.
        proto: Option<i64>,
        /// Credentials.
        auth: Option<(Bytes, Bytes)>,
        /// Client name.
        name: Option<Bytes>,
    },
    /// `RESET`.
    Reset,
    /// `QUIT`.
    Quit,
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn client(args: &[Bytes], conn: &mut ConnState, out: &mut Out<'_>) -> Action {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let info = &conn.info;
    match (sub.as_str(), args.len()) {
        ("id", 2) => out.int(info.id as i64),
        ("getname", 2) => {
            let name = info.name.lock().clone();
            out.opt_bulk(name.as_deref());
        }
        ("setname", 3) => {
            if !valid_name(&args[2]) {
                out.error("ERR Client names cannot contain spaces, newlines or special characters.");
            } else {
                *info.name.lock() = (!args[2].is_empty()).then(|| args[2].clone());
                out.ok();
            }
        }
        ("setinfo", 4) => {
            if !valid_name(&args[3]) {
                out.error(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(&args[2]).to_ascii_lowercase()
                ));
            } else if is(&args[2], "lib-name") {
                info.lib.lock().0 = Some(args[3].clone());
                out.ok();
            } else if is(&args[2], "lib-ver") {
                info.lib.lock().1 = Some(args[3].clone());
                out.ok();
            } else {
                out.error(&format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(&args[2])));
            }
        }
        ("list", _) => {
            let laddr = conn.shared.local_addr;
            let mut text = String::new();
            for c in conn.shared.clients.lock().values() {
                text.push_str(&c.line(laddr));
                text.push('\n');
            }
            out.verbatim(text.as_bytes());
        }
        ("info", 2) => {
            let line = info.line(conn.shared.local_addr) + "\n";
            out.verbatim(line.as_bytes());
        }
        ("id" | "getname" | "setname" | "setinfo" | "info", _) => arity_error(out, &format!("client|{sub}")),
        _ => out.error(&format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(&args[1]))),
    }
    Action::Local
}

/// Dispatches a connection command (arity already checked).
pub fn dispatch(name: &str, args: &[Bytes], conn: &mut ConnState, out: &mut Out<'_>) -> Action {
    match name {
        "ping" => {
            match args.len() {
                1 => out.simple("PONG"),
                2 => out.bulk(&args[1]),
                _ => arity_error(out, "ping"),
            }
            Action::Local
        }
        "echo" => {
            out.bulk(&args[1]);
            Action::Local
        }
        "select" => {
            match int_arg(&args[1]) {
                Some(0) => out.ok(),
                Some(_) => out.error("ERR DB index is out of range"),
                None => not_integer(out),
            }
            Action::Local
        }
        "client" => client(args, conn, out),
        "auth" => match args.len() {
            2 => Action::Barrier(Barrier::Auth { user: None, password: args[1].clone() }),
            3 => Action::Barrier(Barrier::Auth { user: Some(args[1].clone()), password: args[2].clone() }),
            _ => {
                syntax_error(out);
                Action::Local
            }
        },
        "hello" => {
            let mut proto = None;
            let (mut auth, mut setname) = (None, None);
            if args.len() > 1 {
                match int_arg(&args[1]) {
                    Some(p) => proto = Some(p),
                    None => {
                        out.error("ERR Protocol version is not an integer or out of range");
                        return Action::Local;
                    }
                }
                let mut i = 2;
                while i < args.len() {
                    if is(&args[i], "auth") && i + 2 < args.len() {
                        auth = Some((args[i + 1].clone(), args[i + 2].clone()));
                        i += 3;
                    } else if is(&args[i], "setname") && i + 1 < args.len() {
                        setname = Some(args[i + 1].clone());
                        i += 2;
                    } else {
                        out.error(&format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(&args[i])));
                        return Action::Local;
                    }
                }
            }
            Action::Barrier(Barrier::Hello { proto, auth, name: setname })
        }
        "quit" => Action::Barrier(Barrier::Quit),
        "reset" => Action::Barrier(Barrier::Reset),
        _ => {
            out.error("ERR unknown command");
            Action::Local
        }
    }
}

/// Checks credentials with the pipeline; on success the connection uses them.
async fn authenticate(conn: &mut ConnState, creds: Credentials) -> Result<(), String> {
    if !conn.shared.auth_required {
        return Err("ERR AUTH <password> called without any password configured for the default user. \
                    Are you sure your configuration is correct?"
            .into());
    }
    let creds = Arc::new(creds);
    match gerdu_api::pipeline::check_credentials(&conn.shared.pipeline, conn.context(), creds.clone()).await {
        Ok(()) => {
            conn.credentials = Some(creds);
            conn.authenticated = true;
            Ok(())
        }
        Err(PipelineError::BadCredentials | PipelineError::Unauthenticated) => {
            Err("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
        Err(e) => Err(super::pipeline_error_text(&e)),
    }
}

fn credentials(user: Option<&Bytes>, password: &Bytes) -> Credentials {
    let user = user.map(|u| String::from_utf8_lossy(u).into_owned());
    Credentials::Password { user, password: String::from_utf8_lossy(password).into_owned() }
}

/// Runs a barrier; returns true when the connection must close.
pub async fn run_barrier(barrier: Barrier, conn: &mut ConnState, out: &mut BytesMut) -> bool {
    match barrier {
        Barrier::Quit => {
            Out::new(out, conn.resp3).ok();
            true
        }
        Barrier::Reset => {
            conn.resp3 = false;
            conn.credentials = None;
            conn.authenticated = false;
            conn.info.resp.store(2, Ordering::Relaxed);
            *conn.info.name.lock() = None;
            Out::new(out, false).simple("RESET");
            false
        }
        Barrier::Auth { user, password } => {
            match authenticate(conn, credentials(user.as_ref(), &password)).await {
                Ok(()) => Out::new(out, conn.resp3).ok(),
                Err(msg) => Out::new(out, conn.resp3).error(&msg),
            }
            false
        }
        Barrier::Hello { proto, auth, name } => {
            if let Some(p) = proto
                && p != 2
                && p != 3
            {
                Out::new(out, conn.resp3).error("NOPROTO unsupported protocol version");
                return false;
            }
            if let Some((user, pass)) = auth {
                if let Err(msg) = authenticate(conn, credentials(Some(&user), &pass)).await {
                    Out::new(out, conn.resp3).error(&msg);
                    return false;
                }
            } else if conn.needs_auth() {
                Out::new(out, conn.resp3)
                    .error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
                return false;
            }
            if let Some(name) = name {
                if !valid_name(&name) {
                    Out::new(out, conn.resp3)
                        .error("ERR Client names cannot contain spaces, newlines or special characters.");
                    return false;
                }
                *conn.info.name.lock() = Some(name);
            }
            if let Some(p) = proto {
                conn.resp3 = p == 3;
                conn.info.resp.store(p as usize, Ordering::Relaxed);
            }
            let role = conn.shared.admin.status().role;
            let mut o = Out::new(out, conn.resp3);
            o.map(7);
            o.bulk(b"server");
            o.bulk(b"redis");
            o.bulk(b"version");
            o.bulk(crate::REDIS_VERSION.as_bytes());
            o.bulk(b"proto");
            o.int(if conn.resp3 { 3 } else { 2 });
            o.bulk(b"id");
            o.int(conn.info.id as i64);
            o.bulk(b"mode");
            o.bulk(b"standalone");
            o.bulk(b"role");
            o.bulk(if role == "leader" { b"master" } else { b"replica" });
            o.bulk(b"modules");
            o.array(0);
            false
        }
    }
}

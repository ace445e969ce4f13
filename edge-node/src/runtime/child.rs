//! Compiling in a child process, so the memory a compile takes goes back with the child.
//!
//! Cranelift needs hundreds of megabytes for a JavaScript or Python component; in the node's
//! own process the allocator keeps much of it after the compile (fragmented arenas), so a
//! device that compiled one module once paid for it until the next restart. The node runs
//! its own binary as `wedge-node module compile` with the component on standard input and
//! reads the native code from standard output: the same binary with the same engine
//! settings, so the code loads exactly as if compiled in-process, and it is cached the same
//! way. Only the `wedge-node` binary does this ([`compile_in_child`], called from its
//! `main`); the node as a library (tests, tools) compiles in-process, and so does a node
//! that cannot start the child (the error is logged once per compile).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// Exit status of the child when the component does not compile (its message on stderr).
pub const EXIT_DOES_NOT_COMPILE: u8 = 2;
/// Most of the child's error message kept.
const MAX_MESSAGE: u64 = 16 * 1024;

/// Compiles modules by running `exe module compile` (the running `wedge-node`).
pub fn compile_in_child(exe: PathBuf) {
    let _ = COMPILER.set(exe);
}

pub(super) fn compiler() -> Option<&'static PathBuf> {
    COMPILER.get().filter(|_| wedge_engine::CAN_COMPILE)
}

/// Why the child did not produce native code.
#[derive(Debug)]
pub(super) enum ChildError {
    /// The component does not compile: the child's message.
    DoesNotCompile(String),
    /// The child could not run or died; compile in-process instead.
    Unavailable(String),
}

/// The native code for `component`, compiled by `exe`.
pub(super) fn compile(exe: &PathBuf, component: &[u8]) -> Result<Vec<u8>, ChildError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        ChildError::Unavailable(format!("{what} {}: {e}", exe.display()))
    };
    let mut child = Command::new(exe)
        .args(["module", "compile"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| unavailable("cannot start", &e))?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ChildError::Unavailable("no pipes to the compiler".into()));
    };
    // Written from a thread while this one reads: a child blocked writing a full pipe
    // would otherwise never read the rest of its input.
    let input = component.to_vec();
    let writer = std::thread::spawn(move || {
        let written = stdin.write_all(&input);
        drop(stdin);
        written
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.take(MAX_MESSAGE).read_to_string(&mut text);
        text
    });
    let mut native = Vec::new();
    let read = stdout.read_to_end(&mut native);
    let status = child.wait().map_err(|e| unavailable("lost", &e))?;
    let message = errors.join().unwrap_or_default();
    let written = writer.join();
    if status.code() == Some(EXIT_DOES_NOT_COMPILE.into()) {
        return Err(ChildError::DoesNotCompile(message.trim().to_string()));
    }
    if !status.success() {
        return Err(ChildError::Unavailable(format!(
            "{} module compile ended with {status}: {}",
            exe.display(),
            message.trim()
        )));
    }
    read.map_err(|e| unavailable("cannot read from", &e))?;
    match written {
        Ok(Ok(())) => Ok(native),
        _ => Err(ChildError::Unavailable(
            "cannot write to the compiler".into(),
        )),
    }
}

/// What `wedge-node module compile` does: the component on standard input, its native code
/// for this machine on standard output.
pub fn compile_stdin_to_stdout() -> std::process::ExitCode {
    let mut component = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut component) {
        eprintln!("cannot read the component: {e}");
        return std::process::ExitCode::from(1);
    }
    #[cfg(feature = "compiler")]
    let native = wedge_engine::config(None)
        .and_then(|config| wasmtime::Engine::new(&config))
        .and_then(|engine| engine.precompile_component(&component));
    #[cfg(not(feature = "compiler"))]
    let native: wasmtime::Result<Vec<u8>> =
        Err(wasmtime::format_err!("{}", super::Error::NoCompiler));
    match native {
        Ok(native) => match std::io::stdout().lock().write_all(&native) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the native code: {e}");
                std::process::ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            std::process::ExitCode::from(EXIT_DOES_NOT_COMPILE)
        }
    }
}

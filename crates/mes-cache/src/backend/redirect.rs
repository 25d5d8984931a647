//! Cluster redirections, followed here rather than by fred.
//!
//! fred 10.1 follows an `ASK` by writing `ASKING` to the target node and
//! reading the next frame of that connection as its reply
//! (`router::utils::send_asking_with_policy`). With other commands in flight
//! on the connection, that frame is the reply to the oldest of them: every
//! reply after it moves one command down, and the last gets `ASKING`'s `OK`.
//! During a reshard, a `GET` answered another key's value (the cache's
//! `tests/cluster_redirects.rs` shows it). So the clients this crate builds
//! refuse redirections in fred (`max_redirections = 0`): a `MOVED` still
//! refreshes fred's slot map before the command fails, an `ASK` fails at
//! once, and [`follow_redirections`] sends the command again: to the new
//! owner after a `MOVED`, and after an `ASK` once the slot's migration ended
//! (the source answers `MOVED` then). Keys whose slot is migrating wait for
//! the migration, up to a budget, instead of being read off the target.

use std::future::Future;
use std::time::{Duration, Instant};

use fred::error::{Error as FredError, ErrorKind};

/// Waits between tries of a command whose slot is migrating: the first try
/// again is at once (after a `MOVED`, fred has the new owner), then a
/// doubling wait up to this.
const LONGEST_WAIT: Duration = Duration::from_millis(50);

/// Whether `error` is a redirection fred refused to follow (a client built
/// with `max_redirections = 0`), or the server's `TRYAGAIN` (a multi-key
/// command on a slot whose keys are split between two nodes mid-migration).
/// fred gives a refused redirection no kind of its own: it is a routing
/// error with this message.
pub fn is_redirection(error: &FredError) -> bool {
    (*error.kind() == ErrorKind::Routing && error.details() == "Too many redirections.")
        || error.details().starts_with("TRYAGAIN")
}

/// Runs `op` until it succeeds, fails otherwise than by a cluster
/// redirection, or `budget` has passed since the first try (then the last
/// redirection is the error). For clients built with
/// `ConnectionConfig::max_redirections` set to 0, which is how this crate
/// builds its own (see the module docs for why): with fred following
/// redirections itself, there is nothing to retry.
///
/// `op` must be safe to send again: a redirected command did not run, but in
/// a pipeline retried as a whole, the commands before it did.
///
/// # Errors
/// What `op` last failed with.
pub async fn follow_redirections<T, F, Fut>(budget: Duration, mut op: F) -> Result<T, FredError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, FredError>>,
{
    let started = Instant::now();
    let mut wait = Duration::ZERO;
    loop {
        match op().await {
            Err(e) if is_redirection(&e) && started.elapsed() + wait < budget => {
                tracing::debug!(error = %e, ?wait, "redirected by the cluster; sending again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).clamp(Duration::from_millis(2), LONGEST_WAIT);
            }
            done => return done,
        }
    }
}

/// The replies of a pipeline, or the first redirection among them (to send
/// it again whole with [`follow_redirections`]).
pub(crate) fn unless_redirected<T>(
    replies: Vec<Result<T, FredError>>,
) -> Result<Vec<Result<T, FredError>>, FredError> {
    match replies
        .iter()
        .position(|reply| reply.as_ref().is_err_and(is_redirection))
    {
        Some(index) => match replies.into_iter().nth(index) {
            Some(Err(e)) => Err(e),
            _ => Err(FredError::new(ErrorKind::Unknown, "redirected reply vanished")),
        },
        None => Ok(replies),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_redirections_and_tryagain_count_as_redirections() {
        assert!(is_redirection(&FredError::new(
            ErrorKind::Routing,
            "Too many redirections."
        )));
        assert!(is_redirection(&FredError::new(
            ErrorKind::Unknown,
            "TRYAGAIN Multiple keys request during rehashing of slot"
        )));
        assert!(!is_redirection(&FredError::new(
            ErrorKind::Routing,
            "Max attempts reached."
        )));
        assert!(!is_redirection(&FredError::new(
            ErrorKind::Timeout,
            "Request timed out."
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn a_redirected_command_is_sent_again_until_it_answers() {
        let mut tries = 0;
        let answered = follow_redirections(Duration::from_secs(1), || {
            tries += 1;
            let attempt = tries;
            async move {
                if attempt < 4 {
                    Err(FredError::new(ErrorKind::Routing, "Too many redirections."))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(answered, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_that_keeps_migrating_fails_after_the_budget_and_other_errors_at_once() {
        let mut tries = 0_u32;
        let error = follow_redirections(Duration::from_millis(500), || {
            tries += 1;
            async { Err::<(), _>(FredError::new(ErrorKind::Routing, "Too many redirections.")) }
        })
        .await
        .unwrap_err();
        assert!(is_redirection(&error));
        assert!(tries > 2, "tried {tries} times");

        let mut tries = 0_u32;
        let error = follow_redirections(Duration::from_secs(1), || {
            tries += 1;
            async { Err::<(), _>(FredError::new(ErrorKind::Timeout, "Request timed out.")) }
        })
        .await
        .unwrap_err();
        assert_eq!((error.kind().clone(), tries), (ErrorKind::Timeout, 1));
    }

    #[test]
    fn a_pipeline_with_a_redirected_reply_is_redirected() {
        let clean: Vec<Result<i64, FredError>> =
            vec![Ok(1), Err(FredError::new(ErrorKind::Unknown, "WRONGTYPE"))];
        assert_eq!(unless_redirected(clean).unwrap().len(), 2);
        let redirected: Vec<Result<i64, FredError>> = vec![
            Ok(1),
            Err(FredError::new(ErrorKind::Routing, "Too many redirections.")),
        ];
        assert!(is_redirection(&unless_redirected(redirected).unwrap_err()));
    }
}

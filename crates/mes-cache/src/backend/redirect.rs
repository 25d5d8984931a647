//! Cluster redirections, followed here rather than by fred (see
//! [`follow_redirections`] for why).

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
/// redirection is the error).
///
/// For fred clients built with `ConnectionConfig::max_redirections` set to
/// 0, as this crate builds its own. fred 10.1 follows an `ASK` by writing
/// `ASKING` to the target node and reading the next frame of that
/// connection as its reply: with other commands in flight there, each of
/// them gets the reply meant for the next (a `GET` answered another key's
/// value). Refused by fred, a `MOVED` still refreshes fred's slot map before
/// the command fails, and an `ASK` fails at once; this sends the command
/// again, at once and then after a doubling wait: to the new owner after a
/// `MOVED`, and after an `ASK` (or a `TRYAGAIN`) once the slot's migration
/// ended. A key whose slot is migrating waits for the migration instead of
/// being read off the target node.
///
/// `op` must be safe to send again: a redirected command did not run, but in
/// a pipeline sent again whole, the commands before it did.
///
/// ```
/// # async fn example(client: fred::clients::Client) -> Result<(), fred::error::Error> {
/// use fred::prelude::KeysInterface;
/// use std::time::Duration;
///
/// let value: Option<String> =
///     mes_cache::follow_redirections(Duration::from_secs(5), || client.get("mes:cache:part:P-1")).await?;
/// # Ok(())
/// # }
/// ```
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

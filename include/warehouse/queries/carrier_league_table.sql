-- Carrier league table: who arrives on time, who cancels, and how well the model scores each carrier.
--
-- Every scored flight in :start .. :end, per carrier. on_time counts flights that arrived less than
-- 15 minutes late; delayed_share is the share of flights with a known outcome that arrived 15 minutes
-- or more late (cancelled and diverted flights have no outcome and are left out of it, and of the
-- Brier score: the mean squared gap between the predicted probability and what happened, 0 is perfect).
-- league_position 1 is the carrier with the lowest delayed_share.
SELECT carrier,
       COUNT(*)                                              AS flights,
       SUM(CASE WHEN cancelled THEN 1 ELSE 0 END)            AS cancellations,
       SUM(CASE WHEN actual_is_delayed = 0 THEN 1 ELSE 0 END) AS on_time,
       AVG(1.0 * actual_is_delayed)                          AS delayed_share,
       AVG(arr_delay)                                        AS mean_arr_delay_min,
       AVG(delay_probability)                                AS mean_predicted,
       AVG(CASE WHEN actual_is_delayed IS NOT NULL
                THEN (delay_probability - actual_is_delayed) * (delay_probability - actual_is_delayed)
           END)                                              AS brier_score,
       RANK() OVER (ORDER BY AVG(1.0 * actual_is_delayed) NULLS LAST) AS league_position
FROM analytics.prediction_outcomes
WHERE flight_date BETWEEN :start AND :end
GROUP BY carrier
ORDER BY league_position, carrier

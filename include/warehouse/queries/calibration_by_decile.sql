-- Calibration by decile: whether flights given about 30 % arrive late about 30 % of the time.
--
-- Flights with a known outcome in :start .. :end, ranked by predicted delay probability and cut
-- into ten groups of about equal size (decile 1 = lowest predicted risk). Flights with the same
-- probability always fall in the same decile, so a decile can hold a few more flights than another.
-- A calibrated model has mean_predicted close to observed_rate in every decile (gap near 0); a
-- positive gap means the model under-predicts delays in that band.
WITH ranked AS (
    SELECT delay_probability,
           actual_is_delayed,
           RANK() OVER (ORDER BY delay_probability) AS risk_rank,
           COUNT(*) OVER () AS scored
    FROM analytics.prediction_outcomes
    WHERE flight_date BETWEEN :start AND :end
      AND actual_is_delayed IS NOT NULL
),
deciles AS (
    SELECT {{ int_div(10 * (risk_rank - 1), scored) }} + 1 AS decile,
           delay_probability,
           actual_is_delayed
    FROM ranked
)
SELECT decile,
       COUNT(*)                                              AS flights,
       MIN(delay_probability)                                AS min_predicted,
       MAX(delay_probability)                                AS max_predicted,
       AVG(delay_probability)                                AS mean_predicted,
       AVG(1.0 * actual_is_delayed)                          AS observed_rate,
       AVG(1.0 * actual_is_delayed) - AVG(delay_probability) AS gap
FROM deciles
GROUP BY decile
ORDER BY decile

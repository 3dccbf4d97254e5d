-- Realised versus predicted delays by week: whether the model drifts.
--
-- Per ISO week (weeks start on Monday; week_start is that Monday, so the first and last weeks of
-- :start .. :end may be partial), over the scored flights with a known outcome: how many delays the
-- model expected (the sum of its probabilities) against how many happened, and the same as rates.
SELECT {{ week_start(flight_date) }}   AS week_start,
       COUNT(*)                        AS flights,
       SUM(delay_probability)          AS predicted_delays,
       SUM(actual_is_delayed)          AS realised_delays,
       AVG(delay_probability)          AS predicted_rate,
       AVG(1.0 * actual_is_delayed)    AS realised_rate
FROM analytics.prediction_outcomes
WHERE flight_date BETWEEN :start AND :end
  AND actual_is_delayed IS NOT NULL
GROUP BY 1
ORDER BY 1

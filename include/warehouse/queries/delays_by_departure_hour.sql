-- Delays by scheduled departure hour: how delays build up through the day, realised against predicted.
--
-- Scored flights with a known outcome in :start .. :end, per hour of the scheduled departure
-- (New York local time, 0-23).
SELECT CAST(EXTRACT(HOUR FROM sched_dep_ts) AS INTEGER) AS dep_hour,
       COUNT(*)                                         AS flights,
       AVG(delay_probability)                           AS predicted_rate,
       AVG(1.0 * actual_is_delayed)                     AS realised_rate,
       AVG(arr_delay)                                   AS mean_arr_delay_min
FROM analytics.prediction_outcomes
WHERE flight_date BETWEEN :start AND :end
  AND actual_is_delayed IS NOT NULL
GROUP BY 1
ORDER BY 1

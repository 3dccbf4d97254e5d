-- Cancellation rates per airport and day: where and when flights were cancelled, and whether the model rated those days risky.
--
-- Scored flights with an outcome in :start .. :end, per day and New York origin airport, worst first.
-- A flight is cancelled when it never departed. mean_predicted is the model's mean delay probability
-- over all the flights of that airport and day (cancellations are not what it predicts, but a bad
-- weather day shows in both).
SELECT flight_date,
       origin,
       COUNT(*)                                       AS flights,
       SUM(CASE WHEN cancelled THEN 1 ELSE 0 END)     AS cancellations,
       AVG(CASE WHEN cancelled THEN 1.0 ELSE 0.0 END) AS cancellation_rate,
       AVG(delay_probability)                         AS mean_predicted
FROM analytics.prediction_outcomes
WHERE flight_date BETWEEN :start AND :end
  AND cancelled IS NOT NULL
GROUP BY flight_date, origin
ORDER BY cancellation_rate DESC, flight_date, origin

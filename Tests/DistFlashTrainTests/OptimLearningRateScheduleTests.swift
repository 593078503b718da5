import DistFlashAttn
import Testing
import DistFlashTrain

@Suite struct OptimLearningRateScheduleTests {
    @Test func warmsUpLinearlyThenFollowsTheCosineDownToTheFloor() throws {
        let schedule = try LearningRateSchedule(peak: 1e-3, warmupSteps: 10, totalSteps: 110, minimumRatio: 0.1)
        #expect(abs(schedule.rate(at: 0) - 1e-4) < 1e-10)
        #expect(abs(schedule.rate(at: 4) - 5e-4) < 1e-10)
        #expect(schedule.rate(at: 9) == 1e-3 && schedule.rate(at: 10) == 1e-3)
        #expect(abs(schedule.rate(at: 60) - 5.5e-4) < 1e-9, "halfway down the cosine: (peak + floor) / 2")
        for t in 0..<9 { #expect(schedule.rate(at: t) < schedule.rate(at: t + 1)) }
        for t in 10..<109 { #expect(schedule.rate(at: t) > schedule.rate(at: t + 1)) }
        #expect(abs(schedule.rate(at: 110) - 1e-4) < 1e-10)
        #expect(schedule.rate(at: 500) == schedule.rate(at: 110))
    }

    @Test func noWarmUpStartsAtThePeak() throws {
        let schedule = try LearningRateSchedule(peak: 2, warmupSteps: 0, totalSteps: 4, minimumRatio: 0)
        #expect(schedule.rate(at: 0) == 2 && schedule.rate(at: 4) == 0)
        #expect(abs(schedule.rate(at: 2) - 1) < 1e-6)
    }

    @Test func invalidSettingsThrow() {
        #expect(throws: DistFlashError.self) { try LearningRateSchedule(peak: 0, warmupSteps: 0, totalSteps: 5) }
        #expect(throws: DistFlashError.self) { try LearningRateSchedule(peak: 1, warmupSteps: 6, totalSteps: 5) }
        #expect(throws: DistFlashError.self) {
            try LearningRateSchedule(peak: 1, warmupSteps: 1, totalSteps: 5, minimumRatio: 1.5)
        }
    }
}
